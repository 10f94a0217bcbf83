"""Commits: the `commits` table.

A commit is addressed as (repo, id); ids are global (a job's output commit
takes the id of the wave that made it), so `with_id` finds a whole wave.
An open commit collects writes and becomes a branch's head only when it is
finished, in the same transaction that moves the branch (`repos.set_head`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..layer import Layer
from .db import Row, Tx


@dataclass
class Commit:
    repo: str
    id: str
    branch: str | None
    parent: str | None
    state: str  # "open", "finished", or "failed" (a job's output that never landed: `insert_failed`)
    layers: list[Layer]  # the full index: the parent's layers + its own
    delta: list[Layer]  # its own layers only
    size: int
    nfiles: int
    created: float
    finished: float | None
    description: str
    origin: str  # "user", or "auto" when a job made it
    job: str | None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Row) -> "Commit":
        return cls(
            repo=row["repo"],
            id=row["id"],
            branch=row["branch"],
            parent=row["parent"],
            state=row["state"],
            layers=layers_from_json(row["layers"]),
            delta=layers_from_json(row["delta"]),
            size=row["size"],
            nfiles=row["nfiles"],
            created=row["created"],
            finished=row["finished"],
            description=row["description"],
            origin=row["origin"],
            job=row["job"],
        )

    def to_row(self) -> dict:
        """The row `from_row` reads back, in the order of the commits table's columns
        (what a landing inserts, and what a holder hands to a waiting process)."""
        return {"repo": self.repo, "id": self.id, "branch": self.branch, "parent": self.parent, "state": self.state,
                "layers": layers_json(self.layers), "delta": layers_json(self.delta), "size": self.size,
                "nfiles": self.nfiles, "created": self.created, "finished": self.finished,
                "description": self.description, "origin": self.origin, "job": self.job}

    def to_dict(self) -> dict:
        return {
            "repo": self.repo,
            "id": self.id,
            "branch": self.branch,
            "parent": self.parent,
            "state": self.state,
            "size": self.size,
            "files": self.nfiles,
            "created": self.created,
            "finished": self.finished,
            "description": self.description,
            "origin": self.origin,
            "job": self.job,
            **self.extra,
        }


def layers_json(layers: list[Layer]) -> str:
    return json.dumps([l.to_json() for l in layers])


def layers_from_json(text: str) -> list[Layer]:
    return [Layer.from_json(d) for d in json.loads(text)]


def _one(row: Row | None) -> Commit | None:
    return Commit.from_row(row) if row is not None else None


# ------------------------------------------------------------------- reads


def get(tx: Tx, repo: str, commit_id: str) -> Commit | None:
    return _one(tx.one("SELECT * FROM commits WHERE repo=? AND id=?", (repo, commit_id)))


def exists(tx: Tx, repo: str, commit_id: str) -> bool:
    return tx.one("SELECT 1 FROM commits WHERE repo=? AND id=?", (repo, commit_id)) is not None


def existing(tx: Tx, repo: str, commit_ids: list[str]) -> set[str]:
    """Which of `commit_ids` are commits of `repo` (in one statement)."""
    if not commit_ids:
        return set()
    marks = ", ".join("?" * len(commit_ids))
    return {r["id"] for r in tx.all(f"SELECT id FROM commits WHERE repo=? AND id IN ({marks})", (repo, *commit_ids))}


def by_prefix(tx: Tx, repo: str, prefix: str, limit: int = 2) -> list[Commit]:
    """Commits of `repo` whose id starts with the lower-case hex `prefix`."""
    rows = tx.all("SELECT * FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT ?", (repo, prefix, prefix + "g", limit))
    return [Commit.from_row(r) for r in rows]


def with_id(tx: Tx, prefix: str) -> list[Commit]:
    """Every commit in every repo whose id starts with `prefix`, oldest first."""
    rows = tx.all("SELECT * FROM commits WHERE id >= ? AND id < ? ORDER BY created", (prefix, prefix + "g"))
    return [Commit.from_row(r) for r in rows]


def open_with_id(tx: Tx, commit_id: str) -> list[Commit]:
    """The open commits carrying this exact id (a dpl transaction's), by repo."""
    return [Commit.from_row(r) for r in tx.all("SELECT * FROM commits WHERE id=? AND state='open' ORDER BY repo", (commit_id,))]


def of_repo(tx: Tx, repo: str, limit: int | None = None) -> list[Commit]:
    """Every commit of a repo, newest first."""
    sql = "SELECT * FROM commits WHERE repo=? ORDER BY created DESC"
    rows = tx.all(sql + " LIMIT ?", (repo, int(limit))) if limit else tx.all(sql, (repo,))
    return [Commit.from_row(r) for r in rows]


def ids_of_repo(tx: Tx, repo: str) -> list[str]:
    return [r["id"] for r in tx.all("SELECT id FROM commits WHERE repo=?", (repo,))]


def all_commits(tx: Tx) -> list[Commit]:
    return [Commit.from_row(r) for r in tx.all("SELECT * FROM commits")]


def open_on(tx: Tx, repo: str, branch: str) -> Commit | None:
    """The open commit of a branch, if one was started."""
    return _one(tx.one("SELECT * FROM commits WHERE repo=? AND branch=? AND state='open'", (repo, branch)))


def head(tx: Tx, repo: str, branch: str) -> Commit | None:
    """The head commit of a branch; None when the branch is empty or missing."""
    return _one(tx.one("SELECT c.* FROM branches b JOIN commits c ON c.repo=b.repo AND c.id=b.head WHERE b.repo=? AND b.name=?", (repo, branch)))


def children(tx: Tx, repo: str, commit_id: str, *, finished_only: bool = True) -> list[Commit]:
    sql = "SELECT * FROM commits WHERE repo=? AND parent=?" + (" AND state='finished'" if finished_only else "")
    return [Commit.from_row(r) for r in tx.all(sql, (repo, commit_id))]


def repo_stats(tx: Tx, repo: str) -> tuple[int, float | None]:
    """How many finished commits a repo has, and when the newest finished."""
    row = tx.one("SELECT COUNT(*) AS n, MAX(finished) AS last FROM commits WHERE repo=? AND state='finished'", (repo,))
    return row["n"], row["last"]


# ------------------------------------------------------------------ writes


def insert_open(tx: Tx, repo: str, commit_id: str, branch: str, parent: str | None, created: float, description: str) -> None:
    tx.execute(
        "INSERT INTO commits (repo, id, branch, parent, state, created, description) VALUES (?, ?, ?, ?, 'open', ?, ?)",
        (repo, commit_id, branch, parent, created, description),
    )


_INSERT_FINISHED = ("INSERT INTO commits (repo, id, branch, parent, state, layers, delta, size, nfiles, created, finished, "
                    "description, origin, job) VALUES (?, ?, ?, ?, 'finished', ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _finished_args(c: Commit) -> tuple:
    row = c.to_row()
    del row["state"]  # 'finished', written by the statement itself
    return tuple(row.values())  # to_row's order is _INSERT_FINISHED's


def insert_finished(tx: Tx, c: Commit) -> None:
    tx.execute(_INSERT_FINISHED, _finished_args(c))


def insert_finished_many(tx: Tx, commits: list[Commit]) -> None:
    """Several finished commits (a group landed at once): one round trip on PostgreSQL."""
    if len(commits) == 1:
        insert_finished(tx, commits[0])
    else:
        tx.executemany(_INSERT_FINISHED, [_finished_args(c) for c in commits])


def insert_failed(tx: Tx, repo: str, commit_id: str, branch: str, created: float, description: str, job: str) -> None:
    """The output commit of a job that did not succeed, as Pachyderm keeps it: listed and
    inspectable, marked `failed` with the job's error as its description, but holding
    no file and on no branch (nothing half-written reaches a branch, so it has no parent)."""
    tx.execute(
        "INSERT INTO commits (repo, id, branch, parent, state, created, finished, description, origin, job) "
        "VALUES (?, ?, ?, NULL, 'failed', ?, ?, ?, 'auto', ?)",
        (repo, commit_id, branch, created, created, description, job),
    )


def finish(tx: Tx, repo: str, commit_id: str, *, parent: str | None, layers: list[Layer], delta: list[Layer],
           size: int, nfiles: int, finished: float, description: str | None) -> bool:
    """Finish an open commit; False if it was no longer open."""
    cur = tx.execute(
        "UPDATE commits SET state='finished', parent=?, layers=?, delta=?, size=?, nfiles=?, finished=?, "
        "description=COALESCE(?, description) WHERE repo=? AND id=? AND state='open'",
        (parent, layers_json(layers), layers_json(delta), size, nfiles, finished, description, repo, commit_id),
    )
    return cur.rowcount == 1


def set_delta(tx: Tx, repo: str, commit_id: str, delta: list[Layer]) -> None:
    """An open commit's own layers, as writes add to them."""
    tx.execute("UPDATE commits SET delta=? WHERE repo=? AND id=?", (layers_json(delta), repo, commit_id))


def replace_layers(tx: Tx, repo: str, commit_id: str, old: list[Layer], new: list[Layer]) -> bool:
    """Swap a commit's full index for an equivalent (compacted) one, if nobody changed it meanwhile."""
    cur = tx.execute(
        "UPDATE commits SET layers=? WHERE repo=? AND id=? AND layers=?",
        (layers_json(new), repo, commit_id, layers_json(old)),
    )
    return cur.rowcount == 1


def add_to_open(tx: Tx, repo: str, commit_id: str, delta: list[Layer]) -> bool:
    """Set an open commit's own layers as a write adds one; False if it was
    finished meanwhile.  Its full index stays empty until it is finished."""
    cur = tx.execute(
        "UPDATE commits SET delta=?, layers='[]' WHERE repo=? AND id=? AND state='open'",
        (layers_json(delta), repo, commit_id),
    )
    return cur.rowcount == 1


def reparent(tx: Tx, repo: str, commit_id: str, parent: str | None, delta: list[Layer]) -> None:
    """Squashing: a child takes its parent's parent and prepends its layers."""
    tx.execute("UPDATE commits SET parent=?, delta=? WHERE repo=? AND id=?", (parent, layers_json(delta), repo, commit_id))


def reparent_open(tx: Tx, repo: str, old_parent: str, new_parent: str | None) -> None:
    """Open commits started on a removed commit land on whatever the head is when they finish."""
    tx.execute("UPDATE commits SET parent=? WHERE repo=? AND parent=? AND state='open'", (new_parent, repo, old_parent))


def delete(tx: Tx, repo: str, commit_id: str, *, open_only: bool = False) -> None:
    tx.execute("DELETE FROM commits WHERE repo=? AND id=?" + (" AND state='open'" if open_only else ""), (repo, commit_id))


def delete_open_on(tx: Tx, repo: str, branch: str) -> None:
    tx.execute("DELETE FROM commits WHERE repo=? AND branch=? AND state='open'", (repo, branch))


def delete_of_repo(tx: Tx, repo: str) -> None:
    tx.execute("DELETE FROM commits WHERE repo=?", (repo,))


def disown(tx: Tx, repo: str) -> None:
    """A pipeline deleted with --keep-repo: its commits no longer name jobs."""
    tx.execute("UPDATE commits SET origin='user', job=NULL WHERE repo=?", (repo,))


def finished_on(tx: Tx, repo: str, branch: str) -> list[Commit]:
    """The finished commits made on a branch, newest finished first (a group landed at once: newest made first)."""
    rows = tx.all("SELECT * FROM commits WHERE repo=? AND branch=? AND state='finished' ORDER BY finished DESC, created DESC", (repo, branch))
    return [Commit.from_row(r) for r in rows]


def set_layers(tx: Tx, repo: str, commit_id: str, layers: list[Layer]) -> None:
    """A commit's full index, rebuilt (`fsck --repair`)."""
    tx.execute("UPDATE commits SET layers=? WHERE repo=? AND id=?", (layers_json(layers), repo, commit_id))


def set_parent(tx: Tx, repo: str, commit_id: str, parent: str | None) -> None:
    tx.execute("UPDATE commits SET parent=? WHERE repo=? AND id=?", (parent, repo, commit_id))
