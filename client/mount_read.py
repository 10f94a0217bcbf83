"""How an open file of a mount is read: straight from its verified chunks.

The kernel reads a file of the mount in requests of 128 KiB to 1 MiB,
several at once (the mount's loop has a thread per request in flight).
Each handle knows its file's chunks and answers a request by copying from
the chunks' memory mappings (access.Mapped, verified once) into libfuse's
buffer: one copy, no Python bytes in between.  A handle read front to back
has the next chunks mapped and verified by two threads while the kernel
takes this one, so the copy rarely waits for a hash.

A chunk the store has no local file of (a remote chunk store without a
read cache), and a mount on a server, are read through `access.ReadAhead`
(bytes per request), as dpl:// reads them.
"""

from __future__ import annotations

import bisect
import ctypes
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from . import access

AHEAD = 8  # chunks (about 10 MiB) mapped and verified ahead of a front-to-back read

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The threads that map and verify chunks ahead, shared by every handle of the mount."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(2, thread_name_prefix="dpl-mount-ahead")
        return _pool


class ChunkHandle:
    """One open handle of a file of a commit, whose chunks are local files."""

    def __init__(self, rng: access.ChunkRange, path: str):
        self.rng, self.size, self.path = rng, rng.size, path
        self.chunks, self.refs, self.starts = rng.chunks, rng.refs, rng.starts
        self.lock = threading.Lock()
        self.window: dict[int, Future] = {}  # ref index -> its Mapped, for the refs near the last read
        self.last = -1  # the last ref index a read reached

    def read_into(self, address: int, size: int, offset: int) -> int | None:
        """Copy bytes [offset, offset+size) to `address`; the count, or None
        when a chunk has no local file (the caller reads it as bytes)."""
        end = min(offset + size, self.size)
        if offset >= end:
            return 0
        first = bisect.bisect_right(self.starts, offset) - 1
        last = bisect.bisect_left(self.starts, end)  # refs [first, last) overlap the request
        wanted = self._want(first, last)
        done = 0
        for i, future in zip(range(first, last), wanted):
            mapped = future.result()
            if mapped is None:
                return None
            ref, at = self.refs[i], self.starts[i]
            lo, hi = max(offset, at) - at, min(end, at + ref["length"]) - at
            ctypes.memmove(address + done, mapped.address + ref["offset"] + lo, hi - lo)
            done += hi - lo
        return done

    def _want(self, first: int, last: int) -> list[Future]:
        """The futures of refs [first, last), and the read-ahead of a front-to-back read started."""
        mine = []  # refs this request maps itself, outside the lock
        with self.lock:
            # The kernel's read-ahead has several requests in flight, and they
            # arrive out of order: a read near the furthest one so far is still
            # part of a front-to-back read, and must not look like a jump.
            if self.last - AHEAD <= first <= self.last + AHEAD:
                self.last = max(self.last, last - 1)
                stop = min(len(self.refs), self.last + 1 + AHEAD)
            else:  # a jump (a Parquet reader's): what it asks, and no more
                self.last, stop = last - 1, last
            for i in range(first, stop):
                if i not in self.window:
                    if i < last:  # the request waits for it: mapped here, not queued behind the read-ahead
                        self.window[i] = Future()
                        mine.append(i)
                    else:
                        self.window[i] = _workers().submit(access.verified, self.chunks, self.refs[i]["chunk"])
            for i in [i for i in self.window if i < first - AHEAD or i >= stop + AHEAD]:
                del self.window[i]  # a mapping stays alive while a copy from it holds it
            wanted = [self.window[i] for i in range(first, last)]
        for i in mine:
            future = wanted[i - first]
            try:
                future.set_result(access.verified(self.chunks, self.refs[i]["chunk"]))
            except BaseException as e:  # raised to every reader of it by result()
                future.set_exception(e)
        return wanted

    def fetch(self, start: int, end: int) -> bytes:
        return self.rng.fetch(start, end)


def handle_for(rng: access.Range, path: str):
    """What an open handle of a committed file (`path`) reads through."""
    if isinstance(rng, access.ChunkRange):
        return ChunkHandle(rng, path)
    return access.ReadAhead(rng)
