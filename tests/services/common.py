"""What every service fixture needs: one "cannot be had here" error, the
command that runs a service, and free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import sys


class Unavailable(Exception):
    """The service cannot be had here (no binary, or it would not start).
    conftest skips on it locally and fails on it in CI."""


def find_command(name: str, hint: str) -> str:
    """`name` from this interpreter's virtualenv first (pip-installed
    binaries such as weed and ray), then from PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(here, os.X_OK):
        return here
    found = shutil.which(name)
    if not found:
        raise Unavailable(f"no `{name}` command ({hint})")
    return found


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports free right now (all held open while
    choosing, so that none is handed out twice)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
