"""Reading a put's local files: small ones whole, ahead of the writer, on threads.

Per-file system calls, not hashing, dominate a tree of small files; done on
a few threads they overlap the writer's Python work and each other.  A big
file is left to the writer, which streams it.  `source_error` is the one
sentence a source that cannot be read gets.
"""

from __future__ import annotations

import os
from typing import Iterator, NoReturn

from ..storage.errors import SourceNotFound

SMALL = 1 << 16  # files below this are read in one call and deduplicated by hash


def source_error(local: str, e: OSError) -> NoReturn:
    if isinstance(e, FileNotFoundError):
        raise SourceNotFound(f"Source {local!r} disappeared while it was being read.") from None
    if isinstance(e, (PermissionError, IsADirectoryError)):
        raise SourceNotFound(f"Source {local!r} cannot be read ({e.strerror}).") from None
    raise e


def read_small(locals_: list[str]) -> list:
    """Read each file whole if it is small (on a reader thread: open, read and
    close release the GIL).  Per file: its bytes, None if it is big (the
    writer streams it), or the OSError that reading it raised."""
    out = []
    for local in locals_:
        try:
            fd = os.open(local, os.O_RDONLY)
        except OSError as e:
            out.append(e)
            continue
        try:
            data = os.read(fd, SMALL)
            # A short read of a regular file is its end: the common case of a
            # small file costs one open, one read and one close.
            out.append(data if len(data) < SMALL else None)
        except OSError as e:
            out.append(e)
        finally:
            os.close(fd)
    return out


class Readers:
    """A few threads reading small files ahead of the writer, in order."""

    THREADS = 3
    FILES_PER_TASK = 256
    TASKS_AHEAD = 12  # bounds the bytes read ahead: 12 x 256 small files

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="dpl-read")
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def read(self, files: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str, object]]:
        """(repo path, local path, bytes | None | OSError) of each file, in order."""
        from collections import deque
        from itertools import islice

        pending: deque = deque()

        def submit() -> None:
            task = list(islice(files, self.FILES_PER_TASK))
            if task:
                local = [l for _, l in task]
                if local == ["-"]:
                    pending.append((task, None))
                else:
                    pending.append((task, self.pool.submit(read_small, local)))

        for _ in range(self.TASKS_AHEAD):
            submit()
        while pending:
            task, future = pending.popleft()
            submit()
            results = future.result() if future is not None else [None]
            for (path, local), data in zip(task, results):
                yield path, local, data
