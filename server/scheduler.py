"""The server's scheduler: runs the jobs of every landed commit, ticks cron
inputs, and resumes interrupted jobs, with nobody at a terminal.

It is `dpl run --watch` made a thread, in a process of its own beside the
API's (`schedproc`): each round ticks the cron inputs that
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
from ..storage.metadata import jobs as job_rows


class Scheduler:
    """`workers` runner threads: each round, each claims and runs what jobs it can.

    The job runner's claim (compare-and-swap on the job's owner) keeps two
    workers off one job and off two jobs of one pipeline, so extra workers
    run independent pipelines' jobs side by side.  Only the first worker
    ticks cron inputs."""

    def __init__(self, store, report, *, executor: str | None = None, poll: float = 2.0, enabled: bool = True, workers: int = 1):
        # `report` is told what the server reports: `commit(repo)` and `job(pipeline, state)` (metrics),
        # `up(bool)`, and `progress(rounds, busy)` after each round and as a job starts.
        self.store, self.report, self.executor, self.poll, self.enabled = store, report, executor, poll, enabled
        self.workers = max(1, workers)
        self._wakes = [threading.Event() for _ in range(self.workers)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = [False] * self.workers  # which workers are running jobs
        self.rounds = 0
        self._started: set[tuple[str, str]] = set()  # jobs whose start was logged, until their end is

    @property
    def busy(self) -> bool:
        return any(self._busy)

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    @property
    def healthy(self) -> bool:
        """False when a worker thread is gone while the scheduler should be taking work."""
        return not self.enabled or self._stop.is_set() or all(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if not self.enabled:
            return
        log_event("scheduler.start", executor=self.executor, workers=self.workers)
        for n in range(self.workers):
            thread = threading.Thread(target=self._loop, args=(n,), name=f"dpl-scheduler-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.report.up(True)

    def wake(self) -> None:
        for event in self._wakes:
            event.set()

    def stop(self, grace: float) -> bool:
        """Take no new work; wait up to `grace` seconds for the rounds under way.
        True when nothing was left running."""
        self._stop.set()
        self.wake()
        self.report.up(False)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._threads:
            log_event("scheduler.stop")
        return not any(t.is_alive() for t in self._threads)

    def _loop(self, n: int) -> None:
        wake = self._wakes[n]
        while not self._stop.is_set():
            wake.clear()
            try:
                self._round(n)
            except Exception as e:  # a bad round must not end the server's scheduling
                log_event("scheduler.error", worker=n, error=f"{type(e).__name__}: {e}")
            self.rounds += 1
            self.report.progress(self.rounds, self.busy)
            wake.wait(self._pause() if n == 0 else self.poll)

    def _round(self, n: int) -> None:
        store = self.store
        for ci, commit in store.tick_due() if n == 0 else ():
            self.report.commit(ci.repo)
            log_event("cron.tick", pipeline=ci.pipeline, input=ci.name, repo=ci.repo, commit=commit.id)
            self.wake()  # the other workers may take the jobs the tick started
        if self._stop.is_set():
            return
        # Every landed commit wakes the scheduler, and claiming a job is a write
        # transaction; most commits start no job, so a read says first whether
        # any job waits, and a round of 16 clients' commits does not take the
        # writer's turn once more per commit (a job created after this read
        # lands with a commit, whose wake brings another round).
        if not job_rows.any_unfinished(store.db):
            return
        self._busy[n] = True
        self.report.progress(self.rounds, True)
        try:
            # Pipelines act with their creators' rights: jobs of one whose creator lost read on an input do not run.
            for pipeline, job_id, why in store.auth.gate_jobs():
                log_event("job.end", pipeline=pipeline, job=job_id, state="unrunnable", error=why)
            for job in store.run_jobs(None, executor=self.executor, progress=self._progress, wait=False):
                self.report.job(job["pipeline"], job["state"])
                if job.get("output_commit"):
                    self.report.commit(job["pipeline"])
                self._started.discard((job["pipeline"], job["id"]))
                log_event("job.end", pipeline=job["pipeline"], job=job["id"], state=job["state"], processed=job["processed"],
                          skipped=job["skipped"], failed=job["failed"], duration=job["duration"],
                          error=(job["error"] or "").splitlines()[0] if job["error"] else None)
        finally:
            self._busy[n] = False

    def _progress(self, job: dict, done: int, total: int) -> None:
        # The runner reports once when it has planned a job (done = the datums
        # it skips), then once per datum; the first report is the job's start.
        key = (job["pipeline"], job["id"])
        if key not in self._started:
            why = self.store.auth.job_refusal(job["pipeline"], job["id"])
            if why is not None:  # its creator lost a right since the round's gate: the job fails before any datum runs
                from ..storage.errors import DplError

                raise DplError(why)
            self._started.add(key)
            log_event("job.start", pipeline=job["pipeline"], job=job["id"], skipped=done, total=total)

    def _pause(self) -> float:
        """Until the next poll, or the next cron tick if sooner."""
        try:
            running = {p["name"] for p in self.store.list_pipelines() if p["state"] == "running"}
            due = [self.store.next_tick(ci) for ci in self.store.cron_inputs() if ci.pipeline in running]
        except Exception:
            due = []
        # Not below 0.2 s: a tick that keeps failing (its repo deleted) must not spin.
        return max(0.2, min([self.poll] + [t - time.time() for t in due]))
