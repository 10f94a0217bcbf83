"""Repos, branches and commits: the versioning half of the data model.

Commit ids are global ids (as in Pachyderm 2): a job's output commit takes
the id of the input commit that triggered it, so one id names a whole wave of
commits across repos.  A commit is addressed as (repo, id).

Every branch move is a compare-and-swap inside one metadata transaction, so
two writers never lose a commit: a writer that finds the head moved rebases
its own layers onto the new head.
"""

from __future__ import annotations

import time
import uuid
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
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.commits import Commit
from ..storage.paths import validate_name


def new_commit_id() -> str:
    return uuid.uuid4().hex


class RepoOps:
    """Mixed into `Store`: needs `self.db` (Metadata) and `self.chunks`."""

    # ----------------------------------------------------------------- repos

    def create_repo(self, name: str, description: str = "", *, kind: str = "user") -> dict:
        validate_name(name, "repo")
        with self.db.write() as tx:
            if repo_rows.exists(tx, name):
                raise RepoExists(f"Repo {name!r} already exists.", hint="Pick another name or use the existing repo.")
            repo_rows.insert(tx, name, time.time(), description, kind)
        return self.inspect_repo(name)

    def _repo_row(self, name: str) -> repo_rows.Repo:
        row = repo_rows.get(self.db, name)
        if row is None:
            raise RepoNotFound(f"Repo {name!r} does not exist.", hint="See `dpl list-repo`, or create it with `dpl create-repo`.")
        return row

    def inspect_repo(self, name: str) -> dict:
        row = self._repo_row(name)
        n, last = commit_rows.repo_stats(self.db, name)
        size, files = repo_rows.head_stats(self.db, name, "master") or (0, 0)
        return {
            "name": name,
            "kind": row.kind,
            "description": row.description,
            "created": row.created,
            "size": size,
            "files": files,
            "commits": n,
            "last_commit": last,
            "branches": [b.name for b in repo_rows.branches(self.db, name)],
        }

    def list_repos(self) -> list[dict]:
        return [self.inspect_repo(name) for name in repo_rows.names(self.db)]

    def delete_repo(self, name: str, *, force: bool = False) -> dict:
        """Delete a repo; with `force` also what pipelines made from its commits (see `history`)."""
        self._repo_row(name)
        if pipeline_rows.exists(self.db, name):
            raise RepoInUse(f"Repo {name!r} is the output repo of pipeline {name!r}.", hint=f"Use `dpl delete-pipeline {name}`.")
        readers = self.pipelines_reading(name)
        if readers and not force:
            raise RepoInUse(
                f"Repo {name!r} is an input of pipeline(s) {', '.join(sorted(readers))}.",
                hint="Delete those pipelines first, or pass --force.",
            )
        with self.db.write() as tx:
            commits = {(name, cid) for cid in commit_rows.ids_of_repo(tx, name)}
            plan = self._plan_removal(tx, commits, force=force, what=f"Deleting repo {name!r}")
            result = self._apply_removal(tx, plan)
            commit_rows.delete_of_repo(tx, name)
            repo_rows.delete(tx, name)
        return result

    def pipelines_reading(self, repo: str) -> set[str]:
        """Pipelines that take `repo` as an input (the pipeline layer overrides this)."""
        return set()

    # -------------------------------------------------------------- branches

    def list_branches(self, repo: str) -> list[dict]:
        self._repo_row(repo)
        return [{"repo": repo, "branch": b.name, "head": b.head, "created": b.created, "updated": b.updated} for b in repo_rows.branches(self.db, repo)]

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> dict:
        validate_name(branch, "branch")
        self._repo_row(repo)
        commit = self.resolve_commit(repo, head) if head else None
        with self.db.write() as tx:
            repo_rows.upsert_branch(tx, repo, branch, commit.id if commit else None, time.time())
        return {"repo": repo, "branch": branch, "head": commit.id if commit else None}

    def delete_branch(self, repo: str, branch: str, *, force: bool = False) -> None:
        """Delete a branch; its commits stay readable by id (and keep their provenance)."""
        self._branch_head(repo, branch)
        readers = sorted(pipeline_rows.readers_of(self.db, repo, branch))
        writer = pipeline_rows.writes_to(self.db, repo, branch)
        opened = self.open_commit(repo, branch)
        if not force:
            if readers:
                raise RepoInUse(f"Branch {repo}@{branch} is an input of pipeline(s) {', '.join(readers)}.", hint="Delete or update those pipelines first, or pass --force.")
            if writer:
                raise RepoInUse(f"Branch {repo}@{branch} is where pipeline {repo!r} writes its output.", hint="Delete the pipeline first, or pass --force.")
            if opened:
                raise CommitInUse(f"Branch {repo}@{branch} has an open commit ({opened.id[:12]}).", hint="Finish it, or pass --force to drop it with the branch.")
        with self.db.write() as tx:
            commit_rows.delete_open_on(tx, repo, branch)
            repo_rows.delete_branch(tx, repo, branch)

    def _branch_head(self, repo: str, branch: str) -> str | None:
        row = repo_rows.branch(self.db, repo, branch)
        if row is None:
            self._repo_row(repo)
            raise BranchNotFound(f"Branch {branch!r} does not exist in repo {repo!r}.", hint=f"See `dpl list-branch {repo}`.")
        return row.head

    # --------------------------------------------------------------- commits

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        commit = commit_rows.get(self.db, repo, commit_id)
        if commit is None:
            raise CommitNotFound(f"Commit {commit_id} does not exist in repo {repo!r}.")
        return commit

    def resolve_commit(self, repo: str, ref: str | None = None, *, allow_open: bool = False) -> Commit:
        """A branch, a commit id or unique prefix, with optional `^`/`~n`."""
        self._repo_row(repo)
        base, depth = refs.split_ancestry(ref or "master")
        branch = repo_rows.branch(self.db, repo, base)
        if branch is not None:
            if branch.head is None:
                raise CommitNotFound(f"Branch {base!r} of repo {repo!r} has no commits yet.", hint="Put a file first.")
            commit = self.get_commit(repo, branch.head)
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
        rows = commit_rows.by_prefix(self.db, repo, prefix.lower())
        if not rows:
            raise CommitNotFound(f"No commit of repo {repo!r} starts with {prefix!r}.", hint=f"See `dpl list-commit {repo}`.")
        if len(rows) > 1:
            raise AmbiguousRef(f"{prefix!r} matches several commits of repo {repo!r}.", hint="Type more characters of the id.")
        return rows[0]

    def list_commits(self, repo: str, branch: str | None = None, *, limit: int | None = None) -> list[Commit]:
        """History, newest first: a branch's ancestry, or every commit of the repo."""
        self._repo_row(repo)
        if branch is None:
            return commit_rows.of_repo(self.db, repo, limit)
        commit: Commit | None = self.resolve_commit(repo, branch)
        out = []
        while commit is not None and (limit is None or len(out) < limit):
            out.append(commit)
            commit = self.get_commit(repo, commit.parent) if commit.parent else None
        return out

    def open_commit(self, repo: str, branch: str) -> Commit | None:
        return commit_rows.open_on(self.db, repo, branch)

    def start_commit(self, repo: str, branch: str = "master", description: str = "", *, commit_id: str | None = None) -> Commit:
        validate_name(branch, "branch")
        self._repo_row(repo)
        with self.db.write() as tx:
            if commit_rows.open_on(tx, repo, branch) is not None:
                raise Conflict(
                    f"Branch {branch!r} of repo {repo!r} already has an open commit.",
                    hint="Finish it with `dpl finish-commit` first.",
                )
            head = repo_rows.ensure_branch(tx, repo, branch, time.time())
            cid = commit_id or new_commit_id()
            commit_rows.insert_open(tx, repo, cid, branch, head, time.time(), description)
        return self.get_commit(repo, cid)

    def finish_commit(self, repo: str, commit_ref: str, description: str | None = None) -> Commit:
        commit = self._find_open(repo, commit_ref)
        return self._land(repo, commit.branch, commit.delta, description=description, open_id=commit.id)

    def _find_open(self, repo: str, commit_ref: str) -> Commit:
        self._repo_row(repo)
        commit = self.open_commit(repo, commit_ref)  # a branch name
        if commit is None:
            commit = commit_rows.get(self.db, repo, commit_ref) or self._commit_by_prefix(repo, commit_ref)
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
        with self.db.write() as tx:
            head = repo_rows.ensure_branch(tx, repo, branch, time.time())
            if expect_head is not False and head != expect_head:
                raise Conflict(f"Branch {branch!r} of repo {repo!r} moved during the write.", hint="Run the command again.")
            base = commit_rows.get(tx, repo, head) if head else None
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
            if open_id:
                finished = commit_rows.finish(tx, repo, open_id, parent=head, layers=base_layers + delta, delta=delta,
                                              size=size, nfiles=nfiles, finished=now, description=description)
                if not finished:
                    raise CommitNotOpen(f"Commit {open_id} of repo {repo!r} is no longer open.")
                cid = open_id
            else:
                cid = commit_id or new_commit_id()
                commit_rows.insert_finished(tx, Commit(
                    repo=repo, id=cid, branch=branch, parent=head, state="finished", layers=base_layers + delta, delta=delta,
                    size=size, nfiles=nfiles, created=now, finished=now, description=description or "", origin=origin, job=job,
                ))
            repo_rows.set_head(tx, repo, branch, cid)
            # Downstream jobs are created in the same transaction as the commit:
            # a crash can never leave a commit whose pipelines never hear of it.
            self._on_commit_landed(tx, repo, branch, cid, origin)
            if hook is not None:
                hook(tx, cid)
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
            with self.db.write() as tx:
                commit_rows.replace_layers(tx, repo, commit_id, commit.layers, layers)

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self.resolve_commit(repo, ref, allow_open=True)

    def commits_with_id(self, commit_id: str) -> list[Commit]:
        """Every commit in every repo sharing a global id (or unique prefix)."""
        rows = commit_rows.with_id(self.db, commit_id)
        ids = {c.id for c in rows}
        if len(ids) > 1:
            raise AmbiguousRef(f"{commit_id!r} matches several commit ids.", hint="Type more characters of the id.")
        if not rows:
            raise CommitNotFound(f"No commit has the id {commit_id!r}.")
        return rows

    def require_ref(self, text: str):
        """Parse REPO@REF, refusing a path."""
        ref = refs.parse(text, path_allowed=False)
        if ref.ref is None:
            raise InvalidRef(f"{text!r} needs a branch or commit.", hint=f"Write {text}@master.")
        return ref


def pc_sum(array) -> int:
    return int(pc.sum(array).as_py() or 0)
