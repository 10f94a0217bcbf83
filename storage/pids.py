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
