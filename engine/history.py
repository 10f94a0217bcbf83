"""Rewriting history: deleting and squashing commits without breaking provenance.

Provenance links commits across repos: a job records the input commits it
read (`jobs.inputs`) and the output commit it made, and each datum records the
input commits of its files.  Removing a commit that some job read would leave
those output commits pointing at data that no longer exists, so every
operation here first finds the *downstream* commits (outputs of jobs that read
it, transitively) and refuses, naming them, unless asked to `force`; then the
downstream commits go too (the way Pachyderm removes a whole commit set), so
what stays is always consistent.  `fsck` checks the same links.

* `delete_commit`: removes a commit that has no children (the newest of its
  branch, or an open commit); branches that pointed at it fall back to its
  parent.  The data is gone once `gc` runs.
* `squash_commit`: merges a commit into its children (their own layers are
  prefixed with its layers, their parent becomes its parent); no file
  changes in any commit that stays.  With `force`, provenance that named it
  is moved to its child, which holds its data.
* `delete_repo`: every commit of a repo at once, by the same plan.
"""

from __future__ import annotations

import time

from .jobs import lease_held
from .repos import Repos
from .waves import Waves
from ..storage.errors import CommitInUse, RepoInUse, WouldOrphan
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.db import Database
from ..storage.metadata.jobs import Job

MAX_NAMED = 5


def names(items) -> str:
    """`repo@commit` of a few (repo, commit) pairs, for a message."""
    items = sorted(items)
    text = ", ".join(f"{r}@{c[:12]}" for r, c in items[:MAX_NAMED])
    return text + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


class History:
    """Removing commits, and whole repos, together with what was made from them."""

    def __init__(self, db: Database, repos: Repos):
        self.db, self.repos = db, repos

    # ------------------------------------------------------------ provenance

    def downstream(self, commits) -> tuple[set[tuple[str, str]], dict[tuple[str, str], Job]]:
        """Output commits derived from `commits` (transitively) and the jobs that read them.

        Jobs are keyed (pipeline, id); a job that read one of the commits but
        made no output commit (yet) is included.
        """
        readers: dict[tuple[str, str], list[Job]] = {}
        for j in job_rows.all_jobs(self.db):
            for inp in j.inputs:
                if inp.get("commit"):
                    readers.setdefault((inp["repo"], inp["commit"]), []).append(j)
        start = set(commits)
        out: set[tuple[str, str]] = set()
        jobs: dict[tuple[str, str], Job] = {}
        frontier = list(start)
        while frontier:
            for j in readers.get(frontier.pop(), ()):
                key = (j.pipeline, j.id)
                if key in jobs:
                    continue
                jobs[key] = j
                # Only a job that succeeded made data from it; a failed job's output
                # commit holds none, and goes with its job (`delete_job`).
                if j.output_commit and j.state == "success":
                    c = (j.pipeline, j.output_commit)
                    if c not in start and c not in out:
                        out.add(c)
                        frontier.append(c)
        return out, jobs

    def _refuse_running(self, jobs) -> None:
        now = time.time()
        for j in jobs:
            if j.state == "running" and lease_held(j, now):
                raise CommitInUse(
                    f"Job {j.pipeline}@{j.id[:12]} is running on this data right now.",
                    hint="Wait for it to finish (dpl wait-commit), then run the command again.",
                )

    def _pending_jobs_of(self, tx, wave: str) -> list[Job]:
        """Jobs a commit started that have not pinned their inputs yet (they would read it)."""
        return job_rows.pending_of_wave(tx, wave)

    def plan_removal(self, tx, commits: set[tuple[str, str]], *, force: bool, what: str, extra_jobs=()) -> dict:
        """Check that `commits` can go (with what they feed, if `force`); return the plan."""
        down, jobs = self.downstream(commits)
        for j in extra_jobs:
            jobs.setdefault((j.pipeline, j.id), j)
        self._refuse_running(jobs.values())
        if down and not force:
            raise WouldOrphan(
                f"{what} would orphan {len(down)} downstream commit(s) made from it: {names(down)}.",
                hint="Pass --force to delete those downstream commits too.",
            )
        remove = set(commits) | down
        for repo, cid in sorted(down):
            later = [(repo, c.id) for c in commit_rows.children(tx, repo, cid) if (repo, c.id) not in remove]
            if later:
                raise CommitInUse(
                    f"Downstream commit {repo}@{cid[:12]} has later commits not made from it ({names(later)}), "
                    "so it cannot be removed.",
                    hint=f"Delete or squash {names(later)} first.",
                )
        # Jobs that made a commit being removed go too.
        for repo, cid in remove:
            for j in job_rows.made(tx, repo, cid):
                jobs.setdefault((j.pipeline, j.id), j)
        self._refuse_running(jobs.values())
        return {"commits": remove, "jobs": jobs}

    def apply_removal(self, tx, plan: dict) -> dict:
        """Delete the planned commits and jobs; branches fall back to the nearest surviving ancestor."""
        remove = plan["commits"]
        parents = {}
        for repo, cid in remove:
            commit = commit_rows.get(tx, repo, cid)
            parents[(repo, cid)] = commit.parent if commit else None

        def survivor(repo: str, cid: str | None) -> str | None:
            while cid is not None and (repo, cid) in remove:
                cid = parents.get((repo, cid))
            return cid

        moved = []
        for repo, cid in sorted(remove):
            target = survivor(repo, cid)
            for name in repo_rows.branches_at(tx, repo, cid):
                repo_rows.set_head(tx, repo, name, target)
                moved.append({"repo": repo, "branch": name, "from": cid, "to": target})
            # An open commit started on it lands on whatever the head is when it finishes.
            commit_rows.reparent_open(tx, repo, cid, target)
            commit_rows.delete(tx, repo, cid)
        for pipeline, jid in plan["jobs"]:
            self.delete_job(tx, pipeline, jid)
        return {
            "deleted": [f"{r}@{c}" for r, c in sorted(remove)],
            "moved": moved,
            "jobs": [f"{p}@{j}" for p, j in sorted(plan["jobs"])],
        }

    @staticmethod
    def delete_job(tx, pipeline: str, job: str) -> None:
        """A job record and what only it explains: its datum records, cached outputs and failed output commit."""
        row = job_rows.get(tx, pipeline, job)
        if row is not None and row.output_commit and row.state != "success":
            failed = commit_rows.get(tx, pipeline, row.output_commit)
            if failed is not None and failed.state == "failed":
                commit_rows.delete(tx, pipeline, failed.id)
        datum_rows.delete_of_job(tx, pipeline, job)
        job_rows.delete(tx, pipeline, job)

    # ----------------------------------------------------------------- repos

    def delete_repo(self, name: str, *, force: bool = False, dry_run: bool = False) -> dict:
        """Delete a repo; with `force` also every pipeline downstream of it
        (transitively, with their output repos) and what was made from its commits.

        No pipeline is left reading a repo that no longer exists.  With
        `dry_run` nothing changes: the answer says what would go (the CLI
        shows it before asking).
        """
        self.repos.repo(name)
        if pipeline_rows.exists(self.db, name):
            raise RepoInUse(f"Repo {name!r} is the output repo of pipeline {name!r}.", hint=f"Use `dpl delete-pipeline {name}`.")
        with self.db.write() as tx:
            pipelines = self._pipelines_downstream(tx, name)
            if pipelines and not force:
                raise RepoInUse(
                    f"Repo {name!r} is an input of pipeline(s) {', '.join(pipelines)}.",
                    hint="Delete those pipelines first, or pass --force to delete them too, with their output repos.",
                )
            repos = [name] + pipelines
            commits = {(r, cid) for r in repos for cid in commit_rows.ids_of_repo(tx, r)}
            plan = self.plan_removal(tx, commits, force=force, what=f"Deleting repo {name!r}")
            for p in pipelines:
                for j in job_rows.listing(tx, p):
                    plan["jobs"].setdefault((j.pipeline, j.id), j)
            self._refuse_running(plan["jobs"].values())
            if dry_run:
                result = {"deleted": [f"{r}@{c}" for r, c in sorted(plan["commits"])], "moved": [],
                          "jobs": [f"{p}@{j}" for p, j in sorted(plan["jobs"])]}
            else:
                result = self.apply_removal(tx, plan)
                for p in pipelines:
                    datum_rows.delete_of_pipeline(tx, p)
                    job_rows.delete_of_pipeline(tx, p)
                    pipeline_rows.delete(tx, p)
                for r in repos:
                    commit_rows.delete_of_repo(tx, r)
                    repo_rows.delete(tx, r)
        return {"repos": repos, "pipelines": pipelines, **result}

    @staticmethod
    def _pipelines_downstream(tx, repo: str) -> list[str]:
        """Pipelines that read `repo`, and those that read theirs, and so on, sorted."""
        readers: dict[str, set[str]] = {}
        for edge in pipeline_rows.all_inputs(tx):
            readers.setdefault(edge.repo, set()).add(edge.pipeline)
        found: set[str] = set()
        frontier = [repo]
        while frontier:
            for p in readers.get(frontier.pop(), ()):
                if p not in found and p != repo:
                    found.add(p)
                    frontier.append(p)  # a pipeline's output repo has its name
        return sorted(found)

    # --------------------------------------------------------------- commits

    def delete_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        """Delete a commit without children (and, with `force`, what was made from it)."""
        with self.db.write() as tx:
            commit = self.repos.resolve_commit(repo, ref, allow_open=True)
            name = f"Deleting {repo}@{commit.id[:12]}"
            if commit.state == "open":
                commit_rows.delete(tx, repo, commit.id, open_only=True)
                return {"deleted": [f"{repo}@{commit.id}"], "moved": [], "jobs": []}
            children = commit_rows.children(tx, repo, commit.id)
            if children:
                raise CommitInUse(
                    f"Commit {repo}@{commit.id[:12]} has {len(children)} child commit(s) "
                    f"({names((repo, c.id) for c in children)}); only a commit without children can be deleted.",
                    hint=f"`dpl squash-commit {repo}@{commit.id[:12]}` merges it into its child and keeps the data.",
                )
            plan = self.plan_removal(tx, {(repo, commit.id)}, force=force, what=name,
                                      extra_jobs=self._pending_jobs_of(tx, commit.id) if commit.origin == "user" else ())
            # An output commit removed while the inputs it was made from stay: its pipeline
            # must make it again (its cached datum outputs go with its job), not carry the
            # older output forward as if it were current.
            stale = set()
            for j in plan["jobs"].values():
                made = commit_rows.get(tx, j.pipeline, j.output_commit) if j.output_commit else None
                kept_inputs = not any((i["repo"], i.get("commit")) in plan["commits"] for i in j.inputs)
                if made is not None and made.state == "finished" and (j.pipeline, made.id) in plan["commits"] and kept_inputs:
                    stale.add(j.pipeline)
            result = self.apply_removal(tx, plan)
            if stale:
                result["recompute"] = Waves(self.db).recompute(tx, stale)
            return result

    def squash_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        """Merge a commit into its children, keeping every file of every commit that stays."""
        with self.db.write() as tx:
            commit = self.repos.resolve_commit(repo, ref, allow_open=True)
            cid = commit.id
            if commit.state == "open":
                raise CommitInUse(f"Commit {repo}@{cid[:12]} is still open.", hint="Finish it first, or delete it with `dpl delete-commit`.")
            heads = repo_rows.branches_at(tx, repo, cid)
            if heads:
                raise CommitInUse(
                    f"Commit {repo}@{cid[:12]} is the head of branch {', '.join(heads)}; it has no child to squash into.",
                    hint=f"`dpl delete-commit {repo}@{cid[:12]}` removes a branch's newest commit.",
                )
            children = commit_rows.children(tx, repo, cid, finished_only=False)
            if any(c.state == "open" for c in children):
                raise CommitInUse(f"An open commit was started on {repo}@{cid[:12]}.", hint="Finish or delete it first.")
            if not children:
                raise CommitInUse(f"Commit {repo}@{cid[:12]} has no child to squash into.", hint="`dpl delete-commit` removes it instead.")
            down, jobs = self.downstream({(repo, cid)})
            made_by = job_rows.made(tx, repo, cid)
            self._refuse_running(jobs.values())
            if (jobs or made_by) and not force:
                what = [f"{p}@{j[:12]}" for p, j in sorted(jobs)] + [f"{r.pipeline}@{r.id[:12]} (which made it)" for r in made_by]
                raise WouldOrphan(
                    f"Squashing {repo}@{cid[:12]} would leave the provenance of job(s) {', '.join(what[:MAX_NAMED])} "
                    "naming a commit that no longer exists.",
                    hint="Pass --force to move that provenance to its child, which holds its data.",
                )
            if (jobs or made_by) and len(children) > 1:
                raise CommitInUse(
                    f"Commit {repo}@{cid[:12]} has {len(children)} children, so its provenance cannot move to one of them.",
                    hint="Squash or delete the other branches' commits first.",
                )
            for child in children:
                commit_rows.reparent(tx, repo, child.id, commit.parent, commit.delta + child.delta)
            commit_rows.delete(tx, repo, cid)
            moved = 0
            if jobs or made_by:
                heir = children[0].id
                moved = _move_provenance(tx, repo, cid, heir)
                job_rows.move_output(tx, repo, cid, heir)
            return {"squashed": f"{repo}@{cid}", "into": [f"{repo}@{c.id}" for c in children], "provenance_moved": moved}


def _move_provenance(tx, repo: str, old: str, new: str) -> int:
    """Rewrite job and datum input records that name repo@old to name repo@new."""
    n = 0
    for job in job_rows.naming_commit(tx, old):
        if _rename_input(job.inputs, repo, old, new):
            job_rows.set_inputs(tx, job.pipeline, job.id, job.inputs)
            n += 1
    for run in datum_rows.naming_commit(tx, old):
        inputs = run.inputs
        if _rename_input(inputs, repo, old, new):
            datum_rows.set_inputs(tx, run.pipeline, run.job, run.datum, inputs)
            n += 1
    return n


def _rename_input(inputs: list[dict], repo: str, old: str, new: str) -> bool:
    """Make input records that name repo@old name repo@new; whether any did."""
    changed = False
    for inp in inputs:
        if inp.get("repo") == repo and inp.get("commit") == old:
            inp["commit"] = new
            changed = True
    return changed
