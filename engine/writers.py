"""Who is writing objects right now: the registry `gc` reads before it sweeps.

Between the moment a writer stores its first chunk and the moment a commit
(or a datum record) refers to it, that chunk looks like garbage.  Every
operation that stores objects therefore registers itself here for its whole
duration.  `gc` spares every object touched at or after the oldest live
writer's start (and after its own start), so it can run beside any number
of writers, even with no grace period at all.

A process registers once per store: one empty file under `<store>/writers/`
(`host:pid:nonce`), made at its first write and removed at exit.  Its mtime
says what the process is doing: the start of its oldest running write, or
0 while it writes nothing.  So a write costs two `utime` calls, not a file
made, renamed and removed (which a busy disk's journal makes slow), and
`utime` is atomic: a reader never sees half a time.  A killed writer's file
is recognised by its dead pid and ignored (and removed by `gc`).  Files of
older dpl versions held the start as text; they are still read.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import os
import threading
import time

from ..storage.errors import DiskFull
from ..storage.pids import alive as pid_alive  # by this name for gc, fsck and repair
from ..storage.pids import host as this_host, owner_id

DIR = "writers"
LOCK = ".lock"
IDLE = 0  # the mtime of a registration whose process writes nothing now
_lock = threading.Lock()


class _Registration:
    """This process's registration on one store."""

    def __init__(self, path: str):
        self.path = path
        self.pid = os.getpid()  # a forked child registers anew
        self.depth = 0  # write operations running now
        self.lock: int | None = None  # the registry lock, held shared while depth > 0


_active: dict[str, _Registration] = {}  # store root -> registration


@contextlib.contextmanager
def writing(store):
    """Register this process as a writer of `store` while the block runs (re-entrant)."""
    root = str(store.root)
    with _lock:
        entry = _active.get(root)
        if entry is None or entry.pid != os.getpid():
            directory = os.path.join(root, DIR)
            entry = _active[root] = _Registration(os.path.join(directory, owner_id()))
        if entry.depth == 0:
            _start(entry)
        entry.depth += 1
    try:
        yield
    finally:
        with _lock:
            entry.depth -= 1
            if entry.depth == 0:
                _stop(entry)


def _start(entry: _Registration) -> None:
    directory = os.path.dirname(entry.path)
    lock = None
    try:
        os.makedirs(directory, exist_ok=True)
        lock = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock, fcntl.LOCK_SH)  # waits while a gc that cannot tell ages holds writers off
        start = time.time()
        try:
            os.utime(entry.path, (start, start))
        except FileNotFoundError:  # the first write (or the store directory was remade)
            os.close(os.open(entry.path, os.O_WRONLY | os.O_CREAT, 0o644))
            os.utime(entry.path, (start, start))
    except OSError as e:
        if lock is not None:
            os.close(lock)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull() from None
        raise
    entry.lock = lock


def _stop(entry: _Registration) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(entry.path, ns=(IDLE, IDLE))
    if entry.lock is not None:
        os.close(entry.lock)  # releases the shared lock (the only descriptor of it)
        entry.lock = None


@atexit.register
def _unregister() -> None:
    for entry in _active.values():
        if entry.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


@contextlib.contextmanager
def exclusive(store):
    """Hold every writer off while the block runs; yields False (holding
    nothing) if a writer is active now.  Every writer holds the registry's
    lock shared for its whole duration (released by the kernel if it dies)."""
    directory = os.path.join(str(store.root), DIR)
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def writes_objects(method):
    """Decorate a `Store` method that stores objects: it runs registered as a writer."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with writing(self):
            return method(self, *args, **kwargs)

    return wrapper


def own_depth(store) -> int:
    """How many registered write operations this process has running on `store`."""
    with _lock:
        entry = _active.get(str(store.root))
        return entry.depth if entry and entry.pid == os.getpid() else 0


def live_writers(store, *, exclude_self: bool = False) -> tuple[list[float], list[str]]:
    """Start times of the live writers, and the registration files of dead ones."""
    directory = os.path.join(str(store.root), DIR)
    starts, dead = [], []
    with _lock:
        entry = _active.get(str(store.root))
        own = entry.path if entry else None
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return starts, dead
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".tmp") or name.startswith("."):
            continue
        if exclude_self and path == own:
            continue
        host, pid, _ = (name.split(":") + ["", ""])[:3]
        if host == this_host() and not pid_alive(pid):
            dead.append(path)
            continue
        try:
            start = _start_of(path)
        except (FileNotFoundError, ValueError):
            continue
        if start is not None:
            starts.append(start)
    return starts, dead


def _start_of(path: str) -> float | None:
    """When a registered process's oldest running write started; None if it writes nothing."""
    st = os.stat(path)
    if st.st_size:  # an older dpl's file: the start as text, the file there only while it writes
        with open(path) as f:
            return float(f.read().strip() or 0)
    return None if st.st_mtime_ns == IDLE else st.st_mtime
