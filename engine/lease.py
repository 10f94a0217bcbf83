"""Holding a claimed job: who owns it, whether its owner still does, and the `Lease` a runner keeps.

A job is claimed by compare-and-swap on its owner (engine/jobs.py) and kept
by a heartbeat.  The same thread that beats also reads the job's row, so a
runner learns when the job stops being its own: `dpl stop-job` killed it
(from this process or any other, through the metadata), it was deleted, or
another runner took it over after a silence.  It then tells the run, which
kills the running steps rather than let them go on for nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..storage.pids import alive as pid_alive, host as this_host
from ..storage.metadata import jobs as job_rows
from ..storage.metadata.db import Database

LEASE_SECONDS = 30.0
HEARTBEAT_SECONDS = 2.0
# How often a runner reads its job's row: a stop takes effect within this (plus the kill).
# One primary-key read per running job, off the datums' threads.
WATCH_SECONDS = 0.5

log = logging.getLogger("dpl")


def lease_held(job: job_rows.Job, now: float) -> bool:
    """Whether a running job's owner still holds it.  On this machine the
    owner's pid says so (a heartbeat can be late under load, and taking over
    a live runner would run its datums twice; only a heartbeat silent for
    many leases means the pid was reused); elsewhere only a fresh heartbeat can."""
    host = (job.owner or "").split(":")[0]
    if host == this_host():
        return _owner_alive(job.owner) and (job.heartbeat or 0) > now - 20 * LEASE_SECONDS
    return (job.heartbeat or 0) > now - LEASE_SECONDS


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, pid, _ = (owner.split(":") + ["", ""])[:3]
    if host != this_host():
        return True  # another machine: only its heartbeat can tell
    return pid_alive(pid)


def lost_because(row: job_rows.Job | None, owner: str) -> str | None:
    """Why `owner` no longer holds the job `row`, if it does not."""
    if row is None:
        return "the job was deleted"
    if row.state == "running" and row.owner == owner:
        return None
    if row.state == "killed":
        return row.error or "the job was stopped"
    if row.state == "running":
        return "the job was taken over by another runner"
    return f"the job is {row.state} now"


class Lease:
    """While a runner holds `job`: beat its heartbeat, and call `on_lost(why)` once when it is no longer the runner's."""

    def __init__(self, db: Database, job: job_rows.Job, owner: str, on_lost: Callable[[str], None]):
        self.db, self.job, self.owner, self.on_lost = db, job, owner, on_lost
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{job.pipeline}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _keep(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while not self._done.wait(WATCH_SECONDS):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
                with self.db.write() as tx:
                    job_rows.beat(tx, self.job.pipeline, self.job.id, self.owner, time.time())
            try:
                why = lost_because(job_rows.get(self.db, self.job.pipeline, self.job.id), self.owner)
            except Exception as e:  # a busy or briefly unreachable database: look again next time
                log.debug("cannot read job %s@%s: %s", self.job.pipeline, self.job.id[:12], e)
                continue
            if why is not None and not self._done.is_set():
                self.on_lost(why)
                return
