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
"""

from __future__ import annotations

import json
import time

from .jobs import _lease_held
from ..storage.errors import CommitInUse, WouldOrphan

MAX_NAMED = 5


def _names(items) -> str:
    items = sorted(items)
    text = ", ".join(f"{r}@{c[:12]}" for r, c in items[:MAX_NAMED])
    return text + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


class HistoryOps:
    """Mixed into `Store`."""

    # ------------------------------------------------------------ provenance

    def downstream(self, commits) -> tuple[set[tuple[str, str]], dict[tuple[str, str], dict]]:
        """Output commits derived from `commits` (transitively) and the jobs that read them.

        Jobs are keyed (pipeline, id); a job that read one of the commits but
        made no output commit (yet) is included.
        """
        readers: dict[tuple[str, str], list] = {}
        for j in self.db.query("SELECT pipeline, id, state, inputs, output_commit, owner, heartbeat FROM jobs"):
            for inp in json.loads(j["inputs"]):
                if inp.get("commit"):
                    readers.setdefault((inp["repo"], inp["commit"]), []).append(j)
        start = set(commits)
        out: set[tuple[str, str]] = set()
        jobs: dict[tuple[str, str], dict] = {}
        frontier = list(start)
        while frontier:
            for j in readers.get(frontier.pop(), ()):
                key = (j["pipeline"], j["id"])
                if key in jobs:
                    continue
                jobs[key] = j
                if j["output_commit"]:
                    c = (j["pipeline"], j["output_commit"])
                    if c not in start and c not in out:
                        out.add(c)
                        frontier.append(c)
        return out, jobs

    def _refuse_running(self, jobs) -> None:
        now = time.time()
        for j in jobs:
            if j["state"] == "running" and _lease_held(j, now):
                raise CommitInUse(
                    f"Job {j['pipeline']}@{j['id'][:12]} is running on this data right now.",
                    hint="Wait for it to finish (dpl wait-commit), then run the command again.",
                )

    def _pending_jobs_of(self, db, wave: str) -> list:
        """Jobs a commit started that have not pinned their inputs yet (they would read it)."""
        return db.execute(
            "SELECT pipeline, id, state, inputs, output_commit, owner, heartbeat FROM jobs "
            "WHERE id=? AND state IN ('created', 'running') AND inputs='[]'",
            (wave,),
        ).fetchall()

    def _plan_removal(self, db, commits: set[tuple[str, str]], *, force: bool, what: str, extra_jobs=()) -> dict:
        """Check that `commits` can go (with what they feed, if `force`); return the plan."""
        down, jobs = self.downstream(commits)
        for j in extra_jobs:
            jobs.setdefault((j["pipeline"], j["id"]), j)
        self._refuse_running(jobs.values())
        if down and not force:
            raise WouldOrphan(
                f"{what} would orphan {len(down)} downstream commit(s) made from it: {_names(down)}.",
                hint="Pass --force to delete those downstream commits too.",
            )
        remove = set(commits) | down
        for repo, cid in sorted(down):
            children = db.execute(
                "SELECT id FROM commits WHERE repo=? AND parent=? AND state='finished'", (repo, cid)
            ).fetchall()
            later = [(repo, c["id"]) for c in children if (repo, c["id"]) not in remove]
            if later:
                raise CommitInUse(
                    f"Downstream commit {repo}@{cid[:12]} has later commits not made from it ({_names(later)}), "
                    "so it cannot be removed.",
                    hint=f"Delete or squash {_names(later)} first.",
                )
        # Jobs that made a commit being removed go too.
        for repo, cid in remove:
            for j in db.execute(
                "SELECT pipeline, id, state, inputs, output_commit, owner, heartbeat FROM jobs WHERE pipeline=? AND output_commit=?",
                (repo, cid),
            ).fetchall():
                jobs.setdefault((j["pipeline"], j["id"]), j)
        self._refuse_running(jobs.values())
        return {"commits": remove, "jobs": jobs}

    def _apply_removal(self, db, plan: dict) -> dict:
        """Delete the planned commits and jobs; branches fall back to the nearest surviving ancestor."""
        remove = plan["commits"]
        parents = {}
        for repo, cid in remove:
            row = db.execute("SELECT parent FROM commits WHERE repo=? AND id=?", (repo, cid)).fetchone()
            parents[(repo, cid)] = row["parent"] if row else None

        def survivor(repo: str, cid: str | None) -> str | None:
            while cid is not None and (repo, cid) in remove:
                cid = parents.get((repo, cid))
            return cid

        moved = []
        for repo, cid in sorted(remove):
            target = survivor(repo, cid)
            for b in db.execute("SELECT name FROM branches WHERE repo=? AND head=?", (repo, cid)).fetchall():
                db.execute("UPDATE branches SET head=? WHERE repo=? AND name=?", (target, repo, b["name"]))
                moved.append({"repo": repo, "branch": b["name"], "from": cid, "to": target})
            # An open commit started on it lands on whatever the head is when it finishes.
            db.execute("UPDATE commits SET parent=? WHERE repo=? AND parent=? AND state='open'", (target, repo, cid))
            db.execute("DELETE FROM commits WHERE repo=? AND id=?", (repo, cid))
        for pipeline, jid in plan["jobs"]:
            self._delete_job(db, pipeline, jid)
        return {
            "deleted": [f"{r}@{c}" for r, c in sorted(remove)],
            "moved": moved,
            "jobs": [f"{p}@{j}" for p, j in sorted(plan["jobs"])],
        }

    @staticmethod
    def _delete_job(db, pipeline: str, job: str) -> None:
        """A job record and what only it explains: its datum records and cached outputs."""
        db.execute("DELETE FROM datum_outputs WHERE pipeline=? AND job=?", (pipeline, job))
        gone = [r["datum"] for r in db.execute("SELECT datum FROM datums WHERE pipeline=? AND job=?", (pipeline, job)).fetchall()]
        db.execute("DELETE FROM datums WHERE pipeline=? AND job=?", (pipeline, job))
        for datum in gone:
            if db.execute("SELECT 1 FROM datums WHERE pipeline=? AND datum=? LIMIT 1", (pipeline, datum)).fetchone() is None:
                db.execute("DELETE FROM lineage WHERE pipeline=? AND datum=?", (pipeline, datum))
        db.execute("DELETE FROM jobs WHERE pipeline=? AND id=?", (pipeline, job))

    # --------------------------------------------------------------- commits

    def delete_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        """Delete a commit without children (and, with `force`, what was made from it)."""
        with self.db.write() as db:
            commit = self.resolve_commit(repo, ref, allow_open=True)
            name = f"Deleting {repo}@{commit.id[:12]}"
            if commit.state == "open":
                db.execute("DELETE FROM commits WHERE repo=? AND id=? AND state='open'", (repo, commit.id))
                return {"deleted": [f"{repo}@{commit.id}"], "moved": [], "jobs": []}
            children = db.execute(
                "SELECT id FROM commits WHERE repo=? AND parent=? AND state='finished'", (repo, commit.id)
            ).fetchall()
            if children:
                raise CommitInUse(
                    f"Commit {repo}@{commit.id[:12]} has {len(children)} child commit(s) "
                    f"({_names((repo, c['id']) for c in children)}); only a commit without children can be deleted.",
                    hint=f"`dpl squash-commit {repo}@{commit.id[:12]}` merges it into its child and keeps the data.",
                )
            plan = self._plan_removal(db, {(repo, commit.id)}, force=force, what=name,
                                      extra_jobs=self._pending_jobs_of(db, commit.id) if commit.origin == "user" else ())
            return self._apply_removal(db, plan)

    def squash_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        """Merge a commit into its children, keeping every file of every commit that stays."""
        with self.db.write() as db:
            commit = self.resolve_commit(repo, ref, allow_open=True)
            cid = commit.id
            if commit.state == "open":
                raise CommitInUse(f"Commit {repo}@{cid[:12]} is still open.", hint="Finish it first, or delete it with `dpl delete-commit`.")
            heads = [b["name"] for b in db.execute("SELECT name FROM branches WHERE repo=? AND head=?", (repo, cid)).fetchall()]
            if heads:
                raise CommitInUse(
                    f"Commit {repo}@{cid[:12]} is the head of branch {', '.join(heads)}; it has no child to squash into.",
                    hint=f"`dpl delete-commit {repo}@{cid[:12]}` removes a branch's newest commit.",
                )
            children = db.execute("SELECT id, state, delta FROM commits WHERE repo=? AND parent=?", (repo, cid)).fetchall()
            if any(c["state"] == "open" for c in children):
                raise CommitInUse(f"An open commit was started on {repo}@{cid[:12]}.", hint="Finish or delete it first.")
            if not children:
                raise CommitInUse(f"Commit {repo}@{cid[:12]} has no child to squash into.", hint="`dpl delete-commit` removes it instead.")
            down, jobs = self.downstream({(repo, cid)})
            made_by = db.execute("SELECT pipeline, id FROM jobs WHERE pipeline=? AND output_commit=?", (repo, cid)).fetchall()
            self._refuse_running(jobs.values())
            if (jobs or made_by) and not force:
                what = [f"{p}@{j[:12]}" for p, j in sorted(jobs)] + [f"{r['pipeline']}@{r['id'][:12]} (which made it)" for r in made_by]
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
                delta = json.loads(commit_delta_json(commit)) + json.loads(child["delta"])
                db.execute("UPDATE commits SET parent=?, delta=? WHERE repo=? AND id=?", (commit.parent, json.dumps(delta), repo, child["id"]))
            db.execute("DELETE FROM commits WHERE repo=? AND id=?", (repo, cid))
            moved = 0
            if jobs or made_by:
                heir = children[0]["id"]
                moved = _move_provenance(db, repo, cid, heir)
                db.execute("UPDATE jobs SET output_commit=? WHERE pipeline=? AND output_commit=?", (heir, repo, cid))
            return {"squashed": f"{repo}@{cid}", "into": [f"{repo}@{c['id']}" for c in children], "provenance_moved": moved}


def commit_delta_json(commit) -> str:
    return json.dumps([l.to_json() for l in commit.delta])


def _move_provenance(db, repo: str, old: str, new: str) -> int:
    """Rewrite job and datum input records that name repo@old to name repo@new."""
    n = 0
    for table, keys in (("jobs", ("pipeline", "id")), ("datums", ("pipeline", "job", "datum"))):
        rows = db.execute(f"SELECT {', '.join(keys)}, inputs FROM {table} WHERE inputs LIKE ?", (f"%{old}%",)).fetchall()
        for r in rows:
            inputs = json.loads(r["inputs"])
            changed = False
            for inp in inputs:
                if inp.get("repo") == repo and inp.get("commit") == old:
                    inp["commit"] = new
                    changed = True
            if changed:
                n += 1
                db.execute(
                    f"UPDATE {table} SET inputs=? WHERE " + " AND ".join(f"{k}=?" for k in keys),
                    (json.dumps(inputs), *[r[k] for k in keys]),
                )
    return n
