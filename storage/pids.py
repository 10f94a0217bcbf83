"""Whether a process of this machine still runs: what tells a live writer's,
server's or worker's leftovers (temporary files, queued commits, scratch
directories, containers) from a dead one's, which may be cleaned up."""

from __future__ import annotations

import os


def alive(pid) -> bool:
    """True for a running process (another user's too); False for none, or for a pid that is no number."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def host() -> str:
    """This machine's name, as socket.gethostname() gives it (uname), without importing socket."""
    return os.uname().nodename


def owner_id() -> str:
    """`host:pid:random`: a process's mark on what it holds (a writer's registration, a job's lease),
    by which another process of this machine tells whether the holder still runs."""
    return f"{host()}:{os.getpid()}:{os.urandom(4).hex()}"
