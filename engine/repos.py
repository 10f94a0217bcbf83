"""Repos and branches, and finding commits by ref: the `Repos` component.

Commit ids are global ids (as in Pachyderm 2): a job's output commit takes
the id of the input commit that triggered it, so one id names a whole wave of
commits across repos.  A commit is addressed as (repo, id), or by a ref: a
branch, an id or a unique prefix of one, with `^`/`~n` for ancestors.
Making commits is `commits.Commits`; this module only reads them, so it needs
no pyarrow (`dpl list-repo` stays fast).
"""

from __future__ import annotations

import time
from typing import Iterator

from . import refs
from ..storage.errors import (
    AmbiguousRef,
    BranchNotFound,
    CommitInUse,
    CommitNotFound,
    CommitNotOpen,
    InvalidRef,
    RepoExists,
    RepoInUse,
    RepoNotFound,
)
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.commits import Commit
from ..storage.metadata.db import Database
from ..storage.paths import validate_name


class Repos:
    """Repos, branches and commit lookups, over the metadata database."""

    def __init__(self, db: Database):
        self.db = db

    # ----------------------------------------------------------------- repos

    def create_repo(self, name: str, description: str = "", *, kind: str = "user") -> dict:
        validate_name(name, "repo")
        with self.db.write() as tx:
            if repo_rows.exists(tx, name):
                raise RepoExists(f"Repo {name!r} already exists.", hint="Pick another name or use the existing repo.")
            repo_rows.insert(tx, name, time.time(), description, kind)
        return self.inspect_repo(name)

    def repo(self, name: str) -> repo_rows.Repo:
        row = repo_rows.get(self.db, name)
        if row is None:
            raise RepoNotFound(f"Repo {name!r} does not exist.", hint="See `dpl list-repo`, or create it with `dpl create-repo`.")
        return row

    def inspect_repo(self, name: str) -> dict:
        row = self.repo(name)
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

    # -------------------------------------------------------------- branches

    def list_branches(self, repo: str) -> list[dict]:
        self.repo(repo)
        return [{"repo": repo, "branch": b.name, "head": b.head, "created": b.created, "updated": b.updated} for b in repo_rows.branches(self.db, repo)]

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> dict:
        validate_name(branch, "branch")
        self.repo(repo)
        commit = self.resolve_commit(repo, head) if head else None
        with self.db.write() as tx:
            repo_rows.upsert_branch(tx, repo, branch, commit.id if commit else None, time.time())
        return {"repo": repo, "branch": branch, "head": commit.id if commit else None}

    def inspect_branch(self, repo: str, branch: str) -> dict:
        """One branch: its head, when it moved, its open commit and its trigger (if any)."""
        from ..storage.metadata import pipelines as pipeline_rows  # (see `refuse_output_branch`)

        head = self.branch_head(repo, branch)
        row = repo_rows.branch(self.db, repo, branch)
        opened = self.open_commit(repo, branch)
        trigger = repo_rows.trigger(self.db, repo, branch)
        updated = self.get_commit(repo, head).finished if head else None
        return {"repo": repo, "branch": branch, "head": head, "created": row.created, "updated": updated,
                "open_commit": opened.id if opened else None,
                "readers": sorted(pipeline_rows.readers_of(self.db, repo, branch)),
                "trigger": trigger.to_dict() if trigger else None}

    def delete_branch(self, repo: str, branch: str, *, force: bool = False) -> None:
        """Delete a branch; its commits stay readable by id (and keep their provenance)."""
        from ..storage.metadata import pipelines as pipeline_rows  # (see `refuse_output_branch`)

        self.branch_head(repo, branch)
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

    def refuse_output_branch(self, repo: str, branch: str, action: str) -> None:
        """Refuse a user's write to a pipeline's output branch, as Pachyderm does.

        Only the pipeline's jobs write there (they land through
        `Commits.land` directly): a file put by hand would be output no job
        made, with no provenance to explain it.
        """
        # Imported here: a listing never needs the pipeline rows (their dataclasses cost ~3 ms to build).
        from ..storage.metadata import pipelines as pipeline_rows

        if pipeline_rows.writes_to(self.db, repo, branch):
            raise RepoInUse(
                f"Cannot {action} {repo}@{branch}: it is the output branch of pipeline {repo!r}, which only its jobs write.",
                hint=f"Write to the pipeline's input repos instead (see `dpl inspect-pipeline {repo}`), or to another branch.",
            )

    def branch_head(self, repo: str, branch: str) -> str | None:
        row = repo_rows.branch(self.db, repo, branch)
        if row is None:
            self.repo(repo)
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
        base, depth = refs.split_ancestry(ref or "master")
        branch = repo_rows.branch(self.db, repo, base)  # a branch implies its repo: the usual ref costs no repo lookup
        if branch is not None:
            if branch.head is None:
                raise CommitNotFound(f"Branch {base!r} of repo {repo!r} has no commits yet.", hint="Put a file first.")
            commit = self.get_commit(repo, branch.head)
        else:
            self.repo(repo)
            commit = self.commit_by_prefix(repo, base)
        for _ in range(depth):
            if commit.parent is None:
                raise CommitNotFound(f"{ref!r} goes back further than the history of repo {repo!r}.")
            commit = self.get_commit(repo, commit.parent)
        if commit.state == "failed" and not allow_open:
            raise CommitNotOpen(f"Commit {commit.id} of repo {repo!r} is the output commit of a failed job ({repo}@{(commit.job or commit.id)[:12]}); it holds no files.",
                                hint=f"See `dpl inspect-job {repo}@{(commit.job or commit.id)[:12]}` for why it failed.")
        if commit.state != "finished" and not allow_open:
            raise CommitNotOpen(f"Commit {commit.id} of repo {repo!r} is still open.", hint="Finish it with `dpl finish-commit`.")
        return commit

    def commit_by_prefix(self, repo: str, prefix: str) -> Commit:
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
        self.repo(repo)
        if branch is None:
            return commit_rows.of_repo(self.db, repo, limit)
        commit: Commit | None = self.resolve_commit(repo, branch)
        out = []
        while commit is not None and (limit is None or len(out) < limit):
            out.append(commit)
            commit = self.get_commit(repo, commit.parent) if commit.parent else None
        return out

    def subscribe_commits(self, repo: str, branch: str, *, new: bool = False, poll: float = 0.25, stop=None) -> Iterator[Commit]:
        """Each commit as it becomes the branch's head, oldest first, until `stop` is set (or forever).

        It follows the head, not the commits made on the branch, so a branch
        moved by a trigger or `create-branch --head` is followed too; the
        commits between two heads seen are given in order.  Without `new`, the
        branch's history comes first (as pachctl's subscribe-commit does).
        """
        seen = self.branch_head(repo, branch) if new else None
        while True:
            head = repo_rows.branch(self.db, repo, branch)
            if head is None:
                raise BranchNotFound(f"Branch {branch!r} of repo {repo!r} was deleted.", hint=f"See `dpl list-branch {repo}`.")
            if head.head is not None and head.head != seen:
                yield from reversed(self._since(repo, head.head, seen))
                seen = head.head
            if stop is not None and stop.wait(poll):
                return
            if stop is None:
                time.sleep(poll)

    def _since(self, repo: str, commit_id: str, stop_at: str | None) -> list[Commit]:
        """`commit_id` and its ancestors down to (not including) `stop_at`, newest first."""
        out: list[Commit] = []
        cid: str | None = commit_id
        while cid is not None and cid != stop_at and len(out) < 10_000:
            commit = commit_rows.get(self.db, repo, cid)
            if commit is None:
                break
            out.append(commit)
            cid = commit.parent
        return out

    def open_commit(self, repo: str, branch: str) -> Commit | None:
        return commit_rows.open_on(self.db, repo, branch)

    def find_open(self, repo: str, commit_ref: str) -> Commit:
        self.repo(repo)
        commit = self.open_commit(repo, commit_ref)  # a branch name
        if commit is None:
            commit = commit_rows.get(self.db, repo, commit_ref) or self.commit_by_prefix(repo, commit_ref)
        if commit.state != "open":
            raise CommitNotOpen(f"Commit {commit.id} of repo {repo!r} is already finished.")
        return commit

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
