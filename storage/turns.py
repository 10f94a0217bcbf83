"""Turns: one writer at a time, among the threads of this process and among processes.

A turn is a mutex for this process's threads plus an flock of a lock file
for other processes: the kernel hands the lock over the moment it is
released (no sleep-and-retry, as SQLite's own lock does), and releases it
when a process dies, so a crashed writer never blocks the next.  The
SQLite metadata takes a turn per write transaction; landing a commit takes
one per branch (engine/commits.py), and a writer that finds it taken
(`try_enter`) queues its commit for the holder to land (engine/landqueue.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

from .perprocess import PerProcess


class Turn:
    def __init__(self, path: str):
        self.mutex = threading.Lock()
        self.path = path
        self.fd: int | None = None
        self.unlockable = False  # the lock file cannot be made (a read-only directory): the mutex alone then

    def __enter__(self):
        self.mutex.acquire()
        try:
            if self._file() is not None:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.mutex.release()
            raise
        return self

    def try_enter(self) -> bool:
        """Take the turn if nobody holds it now (then leave it with `__exit__`)."""
        if not self.mutex.acquire(blocking=False):
            return False
        try:
            if self._file() is not None:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.mutex.release()
            return False
        except BaseException:
            self.mutex.release()
            raise
        return True

    def _file(self) -> int | None:
        if self.fd is None and not self.unlockable:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                self.unlockable = True
        return self.fd

    def __exit__(self, *exc):
        try:
            if self.fd is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.mutex.release()


def _close_copy(t: Turn) -> None:
    """In a forked child: its copy of a lock file's descriptor is its parent's lock."""
    if t.fd is not None:
        with contextlib.suppress(OSError):
            os.close(t.fd)  # the parent keeps its own: its lock stays


_turns = PerProcess(Turn, on_fork=_close_copy)


def turn(path: str) -> Turn:
    """The turn whose lock file is `path` (one object per path in a process)."""
    return _turns.get(path)
