"""The server's scheduler: runs the jobs of every landed commit, ticks cron
inputs, and resumes interrupted jobs, with nobody at a terminal.

It is `dpl run --watch` made a thread: each round ticks the cron inputs that
are due (`Store.tick_due`) and runs every runnable job (`Store.run_jobs`,
without waiting on jobs other live runners hold).  Jobs a killed process left
`running` are taken over by the job runner itself once their owner is dead,
so the first round after a start resumes them, without redoing the datums
they had finished.  A round starts when a request lands a commit (`wake`),
when a cron input is due, or every `poll` seconds, for commits other
processes sharing the store land.

On shutdown, `stop` takes no new round; the round under way finishes its
job (running datums finish and are recorded) within the grace period the
server gives it.  A job still running then is left to the next start, which
resumes it; its finished datums are already recorded.
"""

from __future__ import annotations

import threading
import time

from .observe import log_event


class Scheduler:
    def __init__(self, store, metrics, *, executor: str | None = None, poll: float = 2.0, enabled: bool = True):
        self.store, self.metrics, self.executor, self.poll, self.enabled = store, metrics, executor, poll, enabled
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy = False  # a round is running jobs
        self.rounds = 0

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._loop, name="dpl-scheduler", daemon=True)
        self._thread.start()
        self.metrics.scheduler_up.set(1)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, grace: float) -> bool:
        """Take no new work; wait up to `grace` seconds for the round under way.
        True when nothing was left running."""
        self._stop.set()
        self._wake.set()
        self.metrics.scheduler_up.set(0)
        if self._thread is None:
            return True
        self._thread.join(grace)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        log_event("scheduler.start", executor=self.executor)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._round()
            except Exception as e:  # a bad round must not end the server's scheduling
                log_event("scheduler.error", error=f"{type(e).__name__}: {e}")
            self.rounds += 1
            self._wake.wait(self._pause())
        log_event("scheduler.stop")

    def _round(self) -> None:
        store = self.store
        for ci, commit in store.tick_due():
            self.metrics.commits.labels(ci.repo).inc()
            log_event("cron.tick", pipeline=ci.pipeline, input=ci.name, repo=ci.repo, commit=commit.id)
        if self._stop.is_set():
            return
        self.busy = True
        try:
            for job in store.run_jobs(None, executor=self.executor, progress=self._progress, wait=False):
                self.metrics.jobs_run.labels(job["pipeline"], job["state"]).inc()
                if job.get("output_commit"):
                    self.metrics.commits.labels(job["pipeline"]).inc()
                log_event("job.end", pipeline=job["pipeline"], job=job["id"], state=job["state"], processed=job["processed"],
                          skipped=job["skipped"], failed=job["failed"], duration=job["duration"],
                          error=(job["error"] or "").splitlines()[0] if job["error"] else None)
        finally:
            self.busy = False

    def _progress(self, job: dict, done: int, total: int) -> None:
        # The runner reports 0 done when it starts a job, then once per datum.
        if done == 0 or done == total:
            log_event("job.progress" if done else "job.start", pipeline=job["pipeline"], job=job["id"], done=done, total=total)

    def _pause(self) -> float:
        """Until the next poll, or the next cron tick if sooner."""
        try:
            running = {p["name"] for p in self.store.list_pipelines() if p["state"] == "running"}
            due = [self.store.next_tick(ci) for ci in self.store.cron_inputs() if ci.pipeline in running]
        except Exception:
            due = []
        # Not below 0.2 s: a tick that keeps failing (its repo deleted) must not spin.
        return max(0.2, min([self.poll] + [t - time.time() for t in due]))
