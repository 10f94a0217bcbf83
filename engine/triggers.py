"""Branch triggers: a branch that follows another when a condition holds (pachctl's `create branch --trigger`).

Data lands on a staging branch as often as it likes; a pipeline reads a
branch that moves to the staging head only when enough has piled up.  The
conditions are Pachyderm's (src/server/pfs/server/driver.go, isTriggered):

- size:    the source head is at least this many bytes bigger than the branch's head;
- commits: at least this many commits landed since the branch's head;
- cron:    the schedule ticked between the branch head's finishing and the new commit's;

with `all` every condition set must hold, else any.  Triggers are checked
when a commit lands on the source branch, inside the landing's transaction:
the branch moves in the same atomic step, and the pipelines reading the
moved branch hear of it as of any commit (a trigger on the moved branch is
checked in turn).  As in Pachyderm, a cron condition is checked only then,
not by a clock: a quiet source branch moves nothing.
"""

from __future__ import annotations

import time

from .repos import Repos
from ..storage.errors import DplError, InvalidRef
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.db import Database, Tx
from ..storage.metadata.repos import Trigger
from ..storage.paths import validate_name

MAX_CHAIN = 100_000  # commits walked to count a `commits` condition


class Triggers:
    """Sets branch triggers, and moves their branches when commits land."""

    def __init__(self, db: Database, repos: Repos, landed):
        self.db, self.repos = db, repos
        self.landed = landed  # (tx, repo, branch, commit_id, origin): the downstream jobs a moved branch starts

    def set_trigger(self, repo: str, branch: str, source: str, *, size: int | None = None, commits: int | None = None,
                    cron: str | None = None, all_of: bool = False) -> dict:
        """Create `branch` (if new) with a trigger on `source`; the branch keeps its head until the trigger fires."""
        validate_name(branch, "branch")
        self.repos.repo(repo)
        if source == branch:
            raise InvalidRef(f"Branch {repo}@{branch} cannot trigger on itself.", hint="Name another branch with --trigger.")
        if size is None and commits is None and not cron:
            raise DplError("A trigger needs a condition.", hint="Add --trigger-size, --trigger-commits or --trigger-cron.")
        if (size is not None and size <= 0) or (commits is not None and commits <= 0):
            raise DplError("A trigger's size and commit count must be positive.", hint="e.g. --trigger-size 1M or --trigger-commits 10.")
        if cron:
            from .cron import next_due

            try:
                next_due(cron, time.time())
            except (ValueError, KeyError, DplError):
                raise DplError(f"{cron!r} is not a cron schedule.", hint='Write e.g. "@every 1h" or "0 * * * *".') from None
        with self.db.write() as tx:
            repo_rows.ensure_branch(tx, repo, source, time.time())
            repo_rows.ensure_branch(tx, repo, branch, time.time())
            repo_rows.set_trigger(tx, Trigger(repo, branch, source, size, commits, cron or None, all_of))
        return self.repos.inspect_branch(repo, branch)

    def commit_landed(self, tx: Tx, repo: str, branch: str, commit_id: str, origin: str, depth: int = 0) -> None:
        """In the landing's transaction: move every branch whose trigger on `branch` now holds."""
        if depth > 20:
            return  # a cycle of triggers (a -> b -> a) moves nothing further
        triggers = repo_rows.triggers_on(tx, repo, branch)
        if not triggers:
            return
        new = commit_rows.get(tx, repo, commit_id)
        for t in triggers:
            target = repo_rows.branch(tx, repo, t.branch)
            if target is None or target.head == commit_id:
                continue
            old = commit_rows.get(tx, repo, target.head) if target.head else None
            if fires(tx, t, old, new):
                repo_rows.set_head(tx, repo, t.branch, commit_id)
                self.landed(tx, repo, t.branch, commit_id, origin)
                self.commit_landed(tx, repo, t.branch, commit_id, origin, depth + 1)


def fires(tx: Tx, t: Trigger, old, new) -> bool:
    """Whether the branch of `t`, at `old`, should move to `new` (Pachyderm's isTriggered)."""
    results = []
    if t.size is not None:
        results.append(new.size - (old.size if old else 0) >= t.size)
    if t.commits is not None:
        results.append(_commits_between(tx, t.repo, new, old.id if old else None, t.commits) >= t.commits)
    if t.cron:
        from .cron import next_due  # here: every landing wires triggers in, few have a cron one

        since = (old.finished or old.created) if old else 0.0
        results.append(next_due(t.cron, since) <= (new.finished or time.time()))
    return all(results) if t.all_of else any(results)


def _commits_between(tx: Tx, repo: str, new, stop_at: str | None, enough: int) -> int:
    """Commits from `new` back to `stop_at`, counted only as far as `enough`: a
    landing costs at most that many reads, not the length of the history."""
    n, commit = 0, new
    while commit is not None and commit.id != stop_at and n < min(enough, MAX_CHAIN):
        n += 1
        commit = commit_rows.get(tx, repo, commit.parent) if commit.parent else None
    return n
