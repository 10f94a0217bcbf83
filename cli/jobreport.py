"""Running a command's jobs in this process, and saying how they went.

The embedded default has no daemon: the command that makes work (put-file,
create-pipeline, run, wait-commit) runs its jobs, with a progress bar per
job on stderr.  How each job ended is said on stderr too.  A failed job
fails the command only where the command answers for jobs (`wait-commit`,
`dpl run`); a command that landed a commit succeeded at what it was asked.
Ctrl-C or SIGTERM stops the running steps at once and leaves the jobs to
resume (`stoppable`).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from . import render
from ..storage.errors import DplError


class JobProgress:
    """One progress bar per running job, on stderr, for people watching."""

    def __init__(self):
        self.live = None
        self.tasks: dict[tuple, int] = {}

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True))
            self.live.start()
        return self

    def __call__(self, job: dict, done: int, total: int) -> None:
        if self.live is None:
            return
        key = (job["pipeline"], job["id"])
        if key not in self.tasks:
            self.tasks[key] = self.live.add_task(f"job {job['pipeline']}@{job['id'][:12]}", total=total)
        self.live.update(self.tasks[key], completed=done, total=total)

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()


def run_and_report(store, wave: str | None, executor: str | None, *, fail: bool | None = None) -> None:
    """Run the work of `wave` (or all work), then say what happened, a failed job on stderr.

    A failed job fails the command when `fail`.  By default it does unless
    `wave` is a user commit that landed: put-file, delete-file and
    finish-commit did what they were asked, and a script must not take
    their exit code for a lost commit (and put the data twice);
    `wait-commit` and `dpl run` answer for the jobs."""
    with stoppable(), JobProgress() as progress:
        store.run_jobs(wave, executor=executor, progress=progress)
    jobs = sorted(store.list_jobs(wave=wave), key=lambda j: (j["started"] or j["created"])) if wave else []
    for job in jobs:
        render.info(job_summary(job))
    bad = [j for j in jobs if j["state"] in ("failure", "unrunnable")]
    if not bad:
        return
    first = bad[0]  # the root cause: later ones are unrunnable because of it
    ref = f"{first['pipeline']}@{first['id'][:12]}"
    message = first["error"] or f"Job {ref} failed."
    if fail is None:
        fail = not _landed_commit(store, wave)
    if fail:
        raise DplError(message, hint=f"See `dpl inspect-job {ref}` and `dpl logs --job {ref}`.")
    render.info(f"error: {message}")
    render.info(f"hint: The commit landed; its job failed. See `dpl inspect-job {ref}` and `dpl logs --job {ref}` "
                f"(`dpl wait-commit {wave[:12]}` exits 1 for it).")


def job_summary(job: dict) -> str:
    counts = f"{job['processed']} datums processed, {job['skipped']} skipped" + (f", {job['failed']} failed" if job["failed"] else "")
    not_run = (job.get("total") or 0) - job["processed"] - job["skipped"] - job["failed"]
    if job["state"] != "unrunnable" and not_run > 0:
        counts += f", {not_run} not run"
    return f"job {job['pipeline']}@{job['id'][:12]} {job['state']}: " + (counts if job["state"] != "unrunnable" else "no datum ran")


def _landed_commit(store, wave: str | None) -> bool:
    """Whether `wave` is the id of a user commit that landed (rather than a pipeline's wave)."""
    if wave is None:
        return False
    try:
        return any(c.origin == "user" and c.state == "finished" for c in store.commits_with_id(wave))
    except DplError:
        return False


STOPPED = "stopped; resume with `dpl run`"


@contextmanager
def stoppable():
    """Ctrl-C or SIGTERM while jobs run here: the engine kills the running
    steps and leaves each job resumable; say so, and exit 130 (SIGINT) or
    143 (SIGTERM) as a shell would."""
    got: list[int] = []

    def on_term(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        render.info(STOPPED)
        raise SystemExit(128 + (got[0] if got else signal.SIGINT)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
