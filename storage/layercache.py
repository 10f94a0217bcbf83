"""Small file-index layers a process read or wrote lately (storage/index.py's cache)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from .chunkstore import ChunkStore


class LayerCache:
    """Small layers this process read or wrote lately, by id.

    Every commit reads its parent's layers (to check path collisions and
    count files), which a writer making many commits has just read or
    written: a hit skips opening, reading and parsing a file (~0.1 ms a
    layer, up to MAX_LAYERS of them a commit).  Only layers of a local file
    smaller than `mmap_from` are kept (a big one is memory-mapped, which costs
    nothing to redo), and a hit is checked against the file's inode, size
    and mtime, so an object that was deleted, rewritten or damaged in place
    is read again and reported as before.  Layers are immutable (named by
    their bytes), so nothing else can make an entry stale.
    """

    BUDGET = 64 << 20  # bytes of layer files held (their tables take about as much)

    def __init__(self, mmap_from: int):
        self.mmap_from = mmap_from
        self._entries: OrderedDict = OrderedDict()  # (store root, id) -> (file identity, table)
        self._bytes = 0
        self._lock = threading.Lock()

    def _identity(self, store: ChunkStore, oid: bytes):
        path = store.local_path(oid)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size >= self.mmap_from:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def get(self, store: ChunkStore, oid: bytes):
        key = (getattr(store, "root", None), oid)
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or hit[0] != self._identity(store, oid):
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return hit[1]

    def remember(self, store: ChunkStore, oid: bytes, table) -> None:
        identity = self._identity(store, oid)
        if identity is None:
            return
        key = (getattr(store, "root", None), oid)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[0][1]
            self._entries[key] = (identity, table)
            self._bytes += identity[1]
            while self._bytes > self.BUDGET:
                _, (gone, _) = self._entries.popitem(last=False)
                self._bytes -= gone[1]
