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
    are kept, and a hit is checked against the file's inode, size and
    mtime, so an object that was deleted, rewritten or damaged in place is
    read again and reported as before.  Layers are immutable (named by
    their bytes), so nothing else can make an entry stale.

    A layer of `mmap_from` bytes or more is memory-mapped: its pages are
    the page cache's, not this process's, so it is charged `MAPPED` against
    the budget, not its size.  Mapping it again costs ~0.3 ms (open, map,
    footer, schema): on a repo past a few thousand files, every commit paid
    that for its bottom layer.
    """

    BUDGET = 64 << 20  # bytes of layer files held (their tables take about as much)
    MAPPED = BUDGET // 32  # the charge of a memory-mapped one: at most 32 of them held

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
        return st.st_ino, st.st_size, st.st_mtime_ns

    def get(self, store: ChunkStore, oid: bytes):
        key = (getattr(store, "root", None), oid)
        with self._lock:
            hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] != self._identity(store, oid):
            with self._lock:  # gone or changed: let go of it (a mapped one holds its file's space)
                if self._entries.get(key) is hit:
                    del self._entries[key]
                    self._bytes -= self._charge(hit[0])
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return hit[1]

    def remember(self, store: ChunkStore, oid: bytes, table, *, mapped: bool = False) -> None:
        """Keep `table`, the layer stored as `oid`: a big layer's only if it
        is `mapped` from its file (one built in memory holds its rows in ours)."""
        identity = self._identity(store, oid)
        if identity is None or (identity[1] >= self.mmap_from and not mapped):
            return
        key = (getattr(store, "root", None), oid)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._charge(old[0])
            self._entries[key] = (identity, table)
            self._bytes += self._charge(identity)
            while self._bytes > self.BUDGET:
                _, (gone, _) = self._entries.popitem(last=False)
                self._bytes -= self._charge(gone)

    def _charge(self, identity) -> int:
        size = identity[1]
        return self.MAPPED if size >= self.mmap_from else size
