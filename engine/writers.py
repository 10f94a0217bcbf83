"""Who is writing objects right now: the registry `gc` reads before it sweeps.

Between the moment a writer stores its first chunk and the moment a commit
(or a datum record) refers to it, that chunk looks like garbage.  Every
operation that stores objects therefore registers itself here for its whole
duration: one small file per process under `<store>/writers/`, holding the
time it started.  `gc` spares every object touched at or after the oldest
live writer's start (and after its own start), so it can run beside any
number of writers, even with no grace period at all.  A killed writer's file
is recognised by its dead pid and ignored (and removed by `gc`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import socket
import threading
import time
import uuid

from ..storage.errors import DiskFull

DIR = "writers"
LOCK = ".lock"
_lock = threading.Lock()
_active: dict[str, list] = {}  # store root -> [depth, registration file, start]


@contextlib.contextmanager
def writing(store):
    """Register this process as a writer of `store` while the block runs (re-entrant)."""
    root = str(store.root)
    with _lock:
        entry = _active.get(root)
        if entry is None:
            directory = os.path.join(root, DIR)
            os.makedirs(directory, exist_ok=True)
            lock = None
            path = os.path.join(directory, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
            tmp = path + ".tmp"
            try:
                lock = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(lock, fcntl.LOCK_SH)  # waits while a gc that cannot tell ages holds writers off
                start = time.time()
                with open(tmp, "w") as f:
                    f.write(repr(start))
                os.replace(tmp, path)
            except OSError as e:
                if lock is not None:
                    os.close(lock)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull() from None
                raise
            entry = _active[root] = [0, path, start, lock]
        entry[0] += 1
    try:
        yield
    finally:
        with _lock:
            entry[0] -= 1
            if entry[0] == 0:
                del _active[root]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry[1])
                os.close(entry[3])


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
        return entry[0] if entry else 0


def live_writers(store, *, exclude_self: bool = False) -> tuple[list[float], list[str]]:
    """Start times of the live writers, and the registration files of dead ones."""
    directory = os.path.join(str(store.root), DIR)
    starts, dead = [], []
    with _lock:
        own = (_active.get(str(store.root)) or [0, None])[1]
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
        try:
            with open(path) as f:
                start = float(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            continue
        if host == socket.gethostname() and not pid_alive(pid):
            dead.append(path)
        else:
            starts.append(start)
    return starts, dead


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
