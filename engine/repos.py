"""Repos, branches and commits: the versioning half of the data model.

Commit ids are global ids (as in Pachyderm 2): a job's output commit takes
the id of the input commit that triggered it, so one id names a whole wave of
commits across repos.  A commit is addressed as (repo, id).

Every branch move is a compare-and-swap inside one metadata transaction, so
two writers never lose a commit: a writer that finds the head moved rebases
its own layers onto the new head.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import pyarrow.compute as pc

from . import refs
from .writers import writes_objects
from ..storage import index
from ..storage.errors import (
    AmbiguousRef,
    BranchNotFound,
    CommitInUse,
    CommitNotFound,
    CommitNotOpen,
    Conflict,
    InvalidRef,
    PathCollision,
    RepoExists,
    RepoInUse,
    RepoNotFound,
)
from ..storage.paths import validate_name


@dataclass
class Commit:
    repo: str
    id: str
    branch: str | None
    parent: str | None
    state: str
    layers: list[index.Layer]
    delta: list[index.Layer]
    size: int
    nfiles: int
    created: float
    finished: float | None
    description: str
    origin: str
    job: str | None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> "Commit":
        return cls(
            repo=row["repo"],
            id=row["id"],
            branch=row["branch"],
            parent=row["parent"],
            state=row["state"],
            layers=[index.Layer.from_json(d) for d in json.loads(row["layers"])],
            delta=[index.Layer.from_json(d) for d in json.loads(row["delta"])],
            size=row["size"],
            nfiles=row["nfiles"],
            created=row["created"],
            finished=row["finished"],
            description=row["description"],
            origin=row["origin"],
            job=row["job"],
        )

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


def new_commit_id() -> str:
    return uuid.uuid4().hex


def _layers_json(layers: list[index.Layer]) -> str:
    return json.dumps([l.to_json() for l in layers])


class RepoOps:
    """Mixed into `Store`: needs `self.db` (Metadata) and `self.chunks`."""

    # ----------------------------------------------------------------- repos

    def create_repo(self, name: str, description: str = "", *, kind: str = "user") -> dict:
        validate_name(name, "repo")
        with self.db.write() as db:
            if db.execute("SELECT 1 FROM repos WHERE name=?", (name,)).fetchone():
                raise RepoExists(f"Repo {name!r} already exists.", hint="Pick another name or use the existing repo.")
            db.execute(
                "INSERT INTO repos (name, created, description, kind) VALUES (?, ?, ?, ?)",
                (name, time.time(), description, kind),
            )
        return self.inspect_repo(name)

    def _repo_row(self, name: str):
        row = self.db.one("SELECT * FROM repos WHERE name=?", (name,))
        if row is None:
            raise RepoNotFound(f"Repo {name!r} does not exist.", hint="See `dpl list-repo`, or create it with `dpl create-repo`.")
        return row

    def inspect_repo(self, name: str) -> dict:
        row = self._repo_row(name)
        stats = self.db.one(
            "SELECT COUNT(*) AS n, MAX(finished) AS last FROM commits WHERE repo=? AND state='finished'", (name,)
        )
        master = self.db.one(
            "SELECT c.size, c.nfiles FROM branches b JOIN commits c ON c.repo=b.repo AND c.id=b.head "
            "WHERE b.repo=? AND b.name='master'",
            (name,),
        )
        branches = [r["name"] for r in self.db.query("SELECT name FROM branches WHERE repo=? ORDER BY name", (name,))]
        return {
            "name": name,
            "kind": row["kind"],
            "description": row["description"],
            "created": row["created"],
            "size": master["size"] if master else 0,
            "files": master["nfiles"] if master else 0,
            "commits": stats["n"],
            "last_commit": stats["last"],
            "branches": branches,
        }

    def list_repos(self) -> list[dict]:
        return [self.inspect_repo(r["name"]) for r in self.db.query("SELECT name FROM repos ORDER BY name")]

    def delete_repo(self, name: str, *, force: bool = False) -> dict:
        """Delete a repo; with `force` also what pipelines made from its commits (see `history`)."""
        self._repo_row(name)
        if self.db.one("SELECT 1 FROM pipelines WHERE name=?", (name,)):
            raise RepoInUse(f"Repo {name!r} is the output repo of pipeline {name!r}.", hint=f"Use `dpl delete-pipeline {name}`.")
        readers = self.pipelines_reading(name)
        if readers and not force:
            raise RepoInUse(
                f"Repo {name!r} is an input of pipeline(s) {', '.join(sorted(readers))}.",
                hint="Delete those pipelines first, or pass --force.",
            )
        with self.db.write() as db:
            commits = {(name, r["id"]) for r in db.execute("SELECT id FROM commits WHERE repo=?", (name,)).fetchall()}
            plan = self._plan_removal(db, commits, force=force, what=f"Deleting repo {name!r}")
            result = self._apply_removal(db, plan)
            db.execute("DELETE FROM commits WHERE repo=?", (name,))
            db.execute("DELETE FROM branches WHERE repo=?", (name,))
            db.execute("DELETE FROM repos WHERE name=?", (name,))
        return result

    def pipelines_reading(self, repo: str) -> set[str]:
        """Pipelines that take `repo` as an input (the pipeline layer overrides this)."""
        return set()

    # -------------------------------------------------------------- branches

    def list_branches(self, repo: str) -> list[dict]:
        self._repo_row(repo)
        rows = self.db.query(
            "SELECT b.name, b.head, b.created, c.finished FROM branches b "
            "LEFT JOIN commits c ON c.repo=b.repo AND c.id=b.head WHERE b.repo=? ORDER BY b.name",
            (repo,),
        )
        return [{"repo": repo, "branch": r["name"], "head": r["head"], "created": r["created"], "updated": r["finished"]} for r in rows]

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> dict:
        validate_name(branch, "branch")
        self._repo_row(repo)
        commit = self.resolve_commit(repo, head) if head else None
        with self.db.write() as db:
            db.execute(
                "INSERT INTO branches (repo, name, head, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(repo, name) DO UPDATE SET head=excluded.head",
                (repo, branch, commit.id if commit else None, time.time()),
            )
        return {"repo": repo, "branch": branch, "head": commit.id if commit else None}

    def delete_branch(self, repo: str, branch: str, *, force: bool = False) -> None:
        """Delete a branch; its commits stay readable by id (and keep their provenance)."""
        self._branch_head(repo, branch)
        readers = sorted(r["pipeline"] for r in self.db.query("SELECT pipeline FROM pipeline_inputs WHERE repo=? AND branch=?", (repo, branch)))
        writer = self.db.one("SELECT name FROM pipelines WHERE name=? AND output_branch=?", (repo, branch))
        opened = self.open_commit(repo, branch)
        if not force:
            if readers:
                raise RepoInUse(f"Branch {repo}@{branch} is an input of pipeline(s) {', '.join(readers)}.", hint="Delete or update those pipelines first, or pass --force.")
            if writer:
                raise RepoInUse(f"Branch {repo}@{branch} is where pipeline {repo!r} writes its output.", hint="Delete the pipeline first, or pass --force.")
            if opened:
                raise CommitInUse(f"Branch {repo}@{branch} has an open commit ({opened.id[:12]}).", hint="Finish it, or pass --force to drop it with the branch.")
        with self.db.write() as db:
            db.execute("DELETE FROM commits WHERE repo=? AND branch=? AND state='open'", (repo, branch))
            db.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, branch))

    def _branch_head(self, repo: str, branch: str) -> str | None:
        row = self.db.one("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch))
        if row is None:
            self._repo_row(repo)
            raise BranchNotFound(f"Branch {branch!r} does not exist in repo {repo!r}.", hint=f"See `dpl list-branch {repo}`.")
        return row["head"]

    # --------------------------------------------------------------- commits

    def _commit_row(self, repo: str, commit_id: str):
        return self.db.one("SELECT * FROM commits WHERE repo=? AND id=?", (repo, commit_id))

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        row = self._commit_row(repo, commit_id)
        if row is None:
            raise CommitNotFound(f"Commit {commit_id} does not exist in repo {repo!r}.")
        return Commit.from_row(row)

    def resolve_commit(self, repo: str, ref: str | None = None, *, allow_open: bool = False) -> Commit:
        """A branch, a commit id or unique prefix, with optional `^`/`~n`."""
        self._repo_row(repo)
        base, depth = refs.split_ancestry(ref or "master")
        branch = self.db.one("SELECT head FROM branches WHERE repo=? AND name=?", (repo, base))
        if branch is not None:
            if branch["head"] is None:
                raise CommitNotFound(f"Branch {base!r} of repo {repo!r} has no commits yet.", hint="Put a file first.")
            commit = self.get_commit(repo, branch["head"])
        else:
            commit = self._commit_by_prefix(repo, base)
        for _ in range(depth):
            if commit.parent is None:
                raise CommitNotFound(f"{ref!r} goes back further than the history of repo {repo!r}.")
            commit = self.get_commit(repo, commit.parent)
        if commit.state != "finished" and not allow_open:
            raise CommitNotOpen(f"Commit {commit.id} of repo {repo!r} is still open.", hint="Finish it with `dpl finish-commit`.")
        return commit

    def _commit_by_prefix(self, repo: str, prefix: str) -> Commit:
        if len(prefix) < 4 or not all(c in "0123456789abcdef" for c in prefix.lower()):
            raise CommitNotFound(
                f"{prefix!r} is neither a branch nor a commit of repo {repo!r}.",
                hint=f"See `dpl list-branch {repo}` and `dpl list-commit {repo}`.",
            )
        rows = self.db.query(
            "SELECT * FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT 2",
            (repo, prefix.lower(), prefix.lower() + "g"),
        )
        if not rows:
            raise CommitNotFound(f"No commit of repo {repo!r} starts with {prefix!r}.", hint=f"See `dpl list-commit {repo}`.")
        if len(rows) > 1:
            raise AmbiguousRef(f"{prefix!r} matches several commits of repo {repo!r}.", hint="Type more characters of the id.")
        return Commit.from_row(rows[0])

    def list_commits(self, repo: str, branch: str | None = None, *, limit: int | None = None) -> list[Commit]:
        """History, newest first: a branch's ancestry, or every commit of the repo."""
        self._repo_row(repo)
        if branch is None:
            rows = self.db.query(
                "SELECT * FROM commits WHERE repo=? ORDER BY created DESC" + (f" LIMIT {int(limit)}" if limit else ""), (repo,)
            )
            return [Commit.from_row(r) for r in rows]
        commit: Commit | None = self.resolve_commit(repo, branch)
        out = []
        while commit is not None and (limit is None or len(out) < limit):
            out.append(commit)
            commit = self.get_commit(repo, commit.parent) if commit.parent else None
        return out

    def open_commit(self, repo: str, branch: str) -> Commit | None:
        row = self.db.one("SELECT * FROM commits WHERE repo=? AND branch=? AND state='open'", (repo, branch))
        return Commit.from_row(row) if row else None

    def start_commit(self, repo: str, branch: str = "master", description: str = "", *, commit_id: str | None = None) -> Commit:
        validate_name(branch, "branch")
        self._repo_row(repo)
        with self.db.write() as db:
            if db.execute("SELECT 1 FROM commits WHERE repo=? AND branch=? AND state='open'", (repo, branch)).fetchone():
                raise Conflict(
                    f"Branch {branch!r} of repo {repo!r} already has an open commit.",
                    hint="Finish it with `dpl finish-commit` first.",
                )
            head = self._ensure_branch(db, repo, branch)
            cid = commit_id or new_commit_id()
            db.execute(
                "INSERT INTO commits (repo, id, branch, parent, state, created, description) VALUES (?, ?, ?, ?, 'open', ?, ?)",
                (repo, cid, branch, head, time.time(), description),
            )
        return self.get_commit(repo, cid)

    def _ensure_branch(self, db, repo: str, branch: str) -> str | None:
        row = db.execute("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch)).fetchone()
        if row is None:
            db.execute("INSERT INTO branches (repo, name, head, created) VALUES (?, ?, NULL, ?)", (repo, branch, time.time()))
            return None
        return row["head"]

    def finish_commit(self, repo: str, commit_ref: str, description: str | None = None) -> Commit:
        commit = self._find_open(repo, commit_ref)
        return self._land(repo, commit.branch, commit.delta, description=description, open_id=commit.id)

    def _find_open(self, repo: str, commit_ref: str) -> Commit:
        self._repo_row(repo)
        commit = self.open_commit(repo, commit_ref)  # a branch name
        if commit is None:
            row = self._commit_row(repo, commit_ref)
            commit = Commit.from_row(row) if row else self._commit_by_prefix(repo, commit_ref)
        if commit.state != "open":
            raise CommitNotOpen(f"Commit {commit.id} of repo {repo!r} is already finished.")
        return commit

    @writes_objects
    def _land(
        self,
        repo: str,
        branch: str,
        delta: list[index.Layer],
        *,
        description: str | None = None,
        open_id: str | None = None,
        expect_head: str | None | bool = False,
        commit_id: str | None = None,
        origin: str = "user",
        job: str | None = None,
        hook=None,
    ) -> Commit:
        """Make `delta` the new head commit of `branch`, atomically.

        The head is read and moved inside one write transaction, so the new
        commit's parent is whatever the head is at that instant (a writer
        that raced us simply becomes our parent).  `expect_head` turns that
        rebase into a refusal, for writes that depended on the old head
        (appends).  `hook(db, commit_id)` runs inside the same transaction
        (a job records its success there, so output and job state agree).
        """
        self.chunks.sync()  # bytes durable before any commit refers to them
        delta_tables = [index.read_layer(self.chunks, l) for l in delta]
        with self.db.write() as db:
            head = self._ensure_branch(db, repo, branch)
            if expect_head is not False and head != expect_head:
                raise Conflict(f"Branch {branch!r} of repo {repo!r} moved during the write.", hint="Run the command again.")
            base = Commit.from_row(db.execute("SELECT * FROM commits WHERE repo=? AND id=?", (repo, head)).fetchone()) if head else None
            base_layers = base.layers if base else []
            base_tables = [index.read_layer(self.chunks, l) for l in base_layers]
            clash = index.path_collision(base_tables, delta_tables)
            if clash:
                raise PathCollision(
                    f"{repo}@{branch}:{clash[0]} would be both a file and a directory ({clash[1]} is beneath it).",
                    hint="Delete one of them first (dpl delete-file), or use another name.",
                    file=clash[0], beneath=clash[1],
                )
            size, nfiles = self._stats_after(base, base_tables, delta_tables)
            now = time.time()
            layers_json, delta_json = _layers_json(base_layers + delta), _layers_json(delta)
            if open_id:
                cur = db.execute(
                    "UPDATE commits SET state='finished', parent=?, layers=?, delta=?, size=?, nfiles=?, finished=?, "
                    "description=COALESCE(?, description) WHERE repo=? AND id=? AND state='open'",
                    (head, layers_json, delta_json, size, nfiles, now, description, repo, open_id),
                )
                if cur.rowcount != 1:
                    raise CommitNotOpen(f"Commit {open_id} of repo {repo!r} is no longer open.")
                cid = open_id
            else:
                cid = commit_id or new_commit_id()
                db.execute(
                    "INSERT INTO commits (repo, id, branch, parent, state, layers, delta, size, nfiles, created, finished, "
                    "description, origin, job) VALUES (?, ?, ?, ?, 'finished', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (repo, cid, branch, head, layers_json, delta_json, size, nfiles, now, now, description or "", origin, job),
                )
            db.execute("UPDATE branches SET head=? WHERE repo=? AND name=?", (cid, repo, branch))
            # Downstream jobs are created in the same transaction as the commit:
            # a crash can never leave a commit whose pipelines never hear of it.
            self._on_commit_landed(db, repo, branch, cid, origin)
            if hook is not None:
                hook(db, cid)
        self._compact(repo, cid)
        return self.get_commit(repo, cid)

    def _on_commit_landed(self, db, repo: str, branch: str, commit_id: str, origin: str) -> None:
        """Called inside the landing transaction; the job layer starts waves here."""

    def _stats_after(self, base: Commit | None, base_tables, delta_tables) -> tuple[int, int]:
        """Size and file count of base + delta, touching only the changed paths."""
        new = index.merge(delta_tables)
        added_size, added_count = pc_sum(new["size"]), new.num_rows
        if base is None:
            return added_size, added_count
        touched = [p for t in delta_tables for p in t["path"].to_pylist()]
        old = index.lookup(base_tables, [p for p in touched if not p.endswith("/")])
        replaced = dict(zip(old["path"].to_pylist(), old["size"].to_pylist()))
        for d in (p for p in touched if p.endswith("/")):
            gone = index.under(base_tables, d)
            replaced.update(zip(gone["path"].to_pylist(), gone["size"].to_pylist()))
        return base.size - sum(replaced.values()) + added_size, base.nfiles - len(replaced) + added_count

    def _compact(self, repo: str, commit_id: str) -> None:
        commit = self.get_commit(repo, commit_id)
        layers = index.compact(self.chunks, commit.layers)
        if layers != commit.layers:
            self.chunks.sync()
            with self.db.write() as db:
                db.execute(
                    "UPDATE commits SET layers=? WHERE repo=? AND id=? AND layers=?",
                    (_layers_json(layers), repo, commit_id, _layers_json(commit.layers)),
                )

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self.resolve_commit(repo, ref, allow_open=True)

    def commits_with_id(self, commit_id: str) -> list[Commit]:
        """Every commit in every repo sharing a global id (or unique prefix)."""
        rows = self.db.query("SELECT * FROM commits WHERE id >= ? AND id < ? ORDER BY created", (commit_id, commit_id + "g"))
        ids = {r["id"] for r in rows}
        if len(ids) > 1:
            raise AmbiguousRef(f"{commit_id!r} matches several commit ids.", hint="Type more characters of the id.")
        if not rows:
            raise CommitNotFound(f"No commit has the id {commit_id!r}.")
        return [Commit.from_row(r) for r in rows]

    def require_ref(self, text: str):
        """Parse REPO@REF, refusing a path."""
        ref = refs.parse(text, path_allowed=False)
        if ref.ref is None:
            raise InvalidRef(f"{text!r} needs a branch or commit.", hint=f"Write {text}@master.")
        return ref


def pc_sum(array) -> int:
    return int(pc.sum(array).as_py() or 0)
