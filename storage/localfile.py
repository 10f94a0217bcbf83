"""Writing a repo file out to the local disk, whole or not at all."""

from __future__ import annotations

import os
from typing import Callable


def export(dest: str, repo_path: str, fill: Callable[[int], None]) -> str:
    """Write a file to `dest` (a directory: the file's own name inside it)
    through a temporary file beside it, renamed over `dest` only once
    `fill(fd)` has written all of it; return the path written."""
    if os.path.isdir(dest):
        dest = os.path.join(dest, repo_path.rsplit("/", 1)[-1])
    tmp = f"{dest}.dpl-tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fill(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, dest)
    return dest
