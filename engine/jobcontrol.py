"""Acting on jobs after they start: wait, stop, delete, restart datums, follow logs.

pachctl's wait-job, stop-job, delete-job, restart-datum and `logs -f`, over
the `Jobs` component (which runs and reads jobs) and `History` (which
removes what a job made).  Kept apart from engine/jobs.py, which is the
runner: none of this runs a datum.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator

from ..storage.errors import DplError
from ..storage.metadata import jobs as job_rows
from ..storage.metadata.db import Database
from . import failures
from .errors import DatumNotFound, JobNotFound

if TYPE_CHECKING:
    from .history import History
    from .jobs import Jobs
    from .waves import Waves

UNFINISHED = ("created", "running")


class JobControl:
    def __init__(self, db: Database, jobs: "Jobs", history: "History", waves: "Waves"):
        self.db, self.jobs, self.history, self.waves = db, jobs, history, waves

    def wait_job(self, pipeline: str | None, job: str, *, timeout: float | None = None, poll: float = 0.2) -> dict:
        """The job once it is finished (success, failure, unrunnable or killed); it is run by whoever runs jobs."""
        row = self.jobs.job(pipeline, job)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.jobs.inspect_job(row.pipeline, row.id)
            if info["state"] not in UNFINISHED:
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise DplError(f"Job {row.pipeline}@{row.id[:12]} is still {info['state']} after {timeout:g} s.",
                               hint="Run its jobs with `dpl run`, or wait longer.")
            time.sleep(poll)

    def stop_job(self, pipeline: str | None, job: str) -> dict:
        """Kill an unfinished job at once: it will not run, and a runner holding it, in this process or
        another, kills the job's running steps within a second (its `lease.Lease` reads the job's row)
        and lands nothing; datums that finished are kept, so a later job of the pipeline (`dpl
        rerun-pipeline`, `dpl start-pipeline`) runs only the rest.  Its output commit is kept, as
        Pachyderm finishes a killed job's, marked failed with the reason and on no branch.  Jobs
        downstream in its wave become unrunnable."""
        row = self.jobs.job(pipeline, job)
        reason, now = "stopped by the user (dpl stop-job)", time.time()
        with self.db.write() as tx:
            if not job_rows.kill(tx, row.pipeline, row.id, now, reason):
                state = job_rows.get(tx, row.pipeline, row.id).state
                raise DplError(f"Job {row.pipeline}@{row.id[:12]} is already finished ({state}).",
                               hint=f"Delete it with `dpl delete-job {row.pipeline}@{row.id[:12]}`.")
            failures.keep_failed_output(tx, row.pipeline, row.id, f"Job {row.id[:12]} of pipeline {row.pipeline!r} was {reason}.", now)
        return self.jobs.inspect_job(row.pipeline, row.id)

    def delete_job(self, pipeline: str | None, job: str) -> dict:
        """Delete a finished job, its datum records and logs and, when it succeeded, its output
        commit (only the newest output can go: a later job's output is built on it)."""
        row = self.jobs.job(pipeline, job)
        if row.state in UNFINISHED:
            raise DplError(f"Job {row.pipeline}@{row.id[:12]} is {row.state}.", hint=f"Stop it first: `dpl stop-job {row.pipeline}@{row.id[:12]}`.")
        if row.state == "success" and row.output_commit:
            # The output commit and the job go together, as delete-commit removes them;
            # the pipeline then makes that output again on its next run (a recompute wave).
            return self.history.delete_commit(row.pipeline, row.output_commit)
        with self.db.write() as tx:
            self.history.delete_job(tx, row.pipeline, row.id)
        return {"deleted": [], "moved": [], "jobs": [f"{row.pipeline}@{row.id}"]}

    def restart_datum(self, pipeline: str | None, job: str, datum: str | None = None, *, all_failed: bool = False) -> str:
        """Run a job's failed datums again, in a new job of its pipeline (returned: its id).

        Datums that succeeded are skipped there as always (their outputs are
        kept by id), so the new job redoes exactly what failed.
        """
        row = self.jobs.job(pipeline, job)
        if row.state in UNFINISHED:
            raise DplError(f"Job {row.pipeline}@{row.id[:12]} is still {row.state}; its failed datums are retried by its own tries.",
                           hint="Wait for it (`dpl wait-job`), then restart what failed.")
        datums = self.jobs.list_datums(row.pipeline, row.id)
        failed = [d for d in datums if d["state"] in ("failed", "not-run")]
        if datum is not None:
            chosen = [d for d in datums if d["datum"].startswith(datum)]
            if not chosen:
                raise DatumNotFound(f"Job {row.pipeline}@{row.id[:12]} has no datum {datum!r}.", hint=f"See `dpl list-datum {row.pipeline}@{row.id[:12]}`.")
            if chosen[0]["state"] not in ("failed", "not-run"):
                raise DplError(f"Datum {chosen[0]['datum'][:12]} did not fail ({chosen[0]['state']}): there is nothing to restart.",
                               hint=f"`dpl rerun-pipeline {row.pipeline} --reprocess` runs every datum again.")
        elif not all_failed:
            raise DplError("restart-datum needs a datum or --all-failed.", hint=f"See `dpl list-datum {row.pipeline}@{row.id[:12]}`.")
        elif not failed:
            raise DplError(f"Job {row.pipeline}@{row.id[:12]} has no failed datum.", hint="Nothing to restart.")
        return self.waves.trigger(row.pipeline, "restart-datum")

    def follow_logs(self, pipeline: str | None, job: str, datum: str | None = None, *, poll: float = 0.3) -> Iterator[dict]:
        """Each datum's logs as the datum finishes, until the job is finished (`dpl logs -f`)."""
        row = self.jobs.job(pipeline, job)
        shown: set[str] = set()
        while True:
            state = self.jobs.inspect_job(row.pipeline, row.id)["state"]  # read before the logs: none is missed
            try:
                entries = self.jobs.datum_logs(row.pipeline, row.id, datum)
            except DatumNotFound:
                entries = []  # that datum has not run yet
            for e in entries:
                key = e["datum"] + e["state"]
                if key not in shown and e["state"] not in UNFINISHED:
                    shown.add(key)
                    yield e
            if state not in UNFINISHED:
                return
            time.sleep(poll)

    def latest_job(self, pipeline: str) -> str:
        """The id of a pipeline's newest job (`dpl logs --pipeline P`)."""
        self.jobs.list_jobs(pipeline, limit=1)  # says when the pipeline does not exist
        row = job_rows.latest(self.db, pipeline)
        if row is None:
            raise JobNotFound(f"Pipeline {pipeline!r} has no job yet.", hint="Put data in its inputs, or `dpl run`.")
        return row.id
