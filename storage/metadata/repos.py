"""Repos and branches: the `repos` and `branches` tables.

A branch is a movable pointer to a commit.  Moving it happens inside the
transaction that finishes the commit (`set_head`), so the move is a
compare-and-swap: two writers never lose a commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Row, Tx


@dataclass
class Repo:
    name: str
    created: float
    description: str
    kind: str  # "user", or "pipeline" for a pipeline's output repo

    @classmethod
    def from_row(cls, row: Row) -> "Repo":
        return cls(row["name"], row["created"], row["description"], row["kind"])


@dataclass
class Branch:
    repo: str
    name: str
    head: str | None  # a commit id; None while the branch is empty
    created: float
    updated: float | None = None  # when its head commit finished

    @classmethod
    def from_row(cls, row: Row) -> "Branch":
        return cls(row["repo"], row["name"], row["head"], row["created"], row["updated"])


# ------------------------------------------------------------------- repos


def get(tx: Tx, name: str) -> Repo | None:
    row = tx.one("SELECT * FROM repos WHERE name=?", (name,))
    return Repo.from_row(row) if row is not None else None


def exists(tx: Tx, name: str) -> bool:
    return tx.one("SELECT 1 FROM repos WHERE name=?", (name,)) is not None


def names(tx: Tx) -> list[str]:
    return [r["name"] for r in tx.all("SELECT name FROM repos ORDER BY name")]


def insert(tx: Tx, name: str, created: float, description: str, kind: str = "user", *, if_missing: bool = False) -> None:
    tx.execute(
        "INSERT INTO repos (name, created, description, kind) VALUES (?, ?, ?, ?)" + (" ON CONFLICT DO NOTHING" if if_missing else ""),
        (name, created, description, kind),
    )


def set_kind(tx: Tx, name: str, kind: str) -> None:
    tx.execute("UPDATE repos SET kind=? WHERE name=?", (kind, name))


def delete(tx: Tx, name: str) -> None:
    tx.execute("DELETE FROM branch_triggers WHERE repo=?", (name,))
    tx.execute("DELETE FROM branches WHERE repo=?", (name,))
    tx.execute("DELETE FROM repos WHERE name=?", (name,))


# ---------------------------------------------------------------- branches


def branch(tx: Tx, repo: str, name: str) -> Branch | None:
    row = tx.one("SELECT b.*, NULL AS updated FROM branches b WHERE repo=? AND name=?", (repo, name))
    return Branch.from_row(row) if row is not None else None


def branches(tx: Tx, repo: str) -> list[Branch]:
    """A repo's branches by name, each with when its head commit finished."""
    rows = tx.all(
        "SELECT b.repo, b.name, b.head, b.created, c.finished AS updated FROM branches b "
        "LEFT JOIN commits c ON c.repo=b.repo AND c.id=b.head WHERE b.repo=? ORDER BY b.name",
        (repo,),
    )
    return [Branch.from_row(r) for r in rows]


def branches_at(tx: Tx, repo: str, commit_id: str) -> list[str]:
    """Names of the branches whose head is this commit."""
    return [r["name"] for r in tx.all("SELECT name FROM branches WHERE repo=? AND head=?", (repo, commit_id))]


def all_branches(tx: Tx) -> list[Branch]:
    return [Branch.from_row(r) for r in tx.all("SELECT b.*, NULL AS updated FROM branches b")]


def head_stats(tx: Tx, repo: str, branch: str) -> tuple[int, int] | None:
    """(size, files) of a branch's head commit; None when it has none."""
    row = tx.one(
        "SELECT c.size, c.nfiles FROM branches b JOIN commits c ON c.repo=b.repo AND c.id=b.head WHERE b.repo=? AND b.name=?",
        (repo, branch),
    )
    return (row["size"], row["nfiles"]) if row is not None else None


def ensure_branch(tx: Tx, repo: str, name: str, created: float) -> str | None:
    """The branch's head, creating the branch (empty) if it does not exist."""
    row = tx.one("SELECT head FROM branches WHERE repo=? AND name=?", (repo, name))
    if row is None:
        tx.execute("INSERT INTO branches (repo, name, head, created) VALUES (?, ?, NULL, ?)", (repo, name, created))
        return None
    return row["head"]


def upsert_branch(tx: Tx, repo: str, name: str, head: str | None, created: float) -> None:
    tx.execute(
        "INSERT INTO branches (repo, name, head, created) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (repo, name) DO UPDATE SET head=excluded.head",
        (repo, name, head, created),
    )


def set_head(tx: Tx, repo: str, name: str, head: str | None) -> None:
    tx.execute("UPDATE branches SET head=? WHERE repo=? AND name=?", (head, repo, name))


def delete_branch(tx: Tx, repo: str, name: str) -> None:
    tx.execute("DELETE FROM branch_triggers WHERE repo=? AND branch=?", (repo, name))
    tx.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, name))


def all_repos(tx: Tx) -> list[Repo]:
    """Every repo, by name."""
    return [Repo.from_row(r) for r in tx.all("SELECT * FROM repos ORDER BY name")]


def move_head(tx: Tx, repo: str, name: str, expected: str | None, head: str | None) -> bool:
    """Compare-and-swap a branch's head from `expected` to `head`; False if it had moved."""
    cur = tx.execute("UPDATE branches SET head=? WHERE repo=? AND name=? AND head=?", (head, repo, name, expected))
    return cur.rowcount == 1


# ---------------------------------------------------------------- triggers


@dataclass
class Trigger:
    """A branch that moves to `source`'s head when its conditions hold (engine/triggers.py)."""

    repo: str
    branch: str
    source: str
    size: int | None
    commits: int | None
    cron: str | None
    all_of: bool

    @classmethod
    def from_row(cls, row: Row) -> "Trigger":
        return cls(row["repo"], row["branch"], row["source"], row["size"], row["commits"], row["cron"], bool(row["all_of"]))

    def to_dict(self) -> dict:
        return {"source": self.source, "size": self.size, "commits": self.commits, "cron": self.cron, "all": self.all_of}


def trigger(tx: Tx, repo: str, branch: str) -> Trigger | None:
    row = tx.one("SELECT * FROM branch_triggers WHERE repo=? AND branch=?", (repo, branch))
    return Trigger.from_row(row) if row is not None else None


def triggers_on(tx: Tx, repo: str, source: str) -> list[Trigger]:
    """The triggers that follow `source`, by branch name."""
    rows = tx.all("SELECT * FROM branch_triggers WHERE repo=? AND source=? ORDER BY branch", (repo, source))
    return [Trigger.from_row(r) for r in rows]


def set_trigger(tx: Tx, t: Trigger) -> None:
    tx.execute(
        "INSERT INTO branch_triggers (repo, branch, source, size, commits, cron, all_of) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (repo, branch) DO UPDATE SET source=excluded.source, size=excluded.size, commits=excluded.commits, "
        "cron=excluded.cron, all_of=excluded.all_of",
        (t.repo, t.branch, t.source, t.size, t.commits, t.cron, int(t.all_of)),
    )


def delete_trigger(tx: Tx, repo: str, branch: str | None = None) -> None:
    """A branch's trigger, or (branch None) every trigger of a repo."""
    if branch is None:
        tx.execute("DELETE FROM branch_triggers WHERE repo=?", (repo,))
    else:
        tx.execute("DELETE FROM branch_triggers WHERE repo=? AND branch=?", (repo, branch))
