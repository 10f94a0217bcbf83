"""A local read cache in front of any chunk store.

`CachedStore(slow, directory, max_bytes)` wraps a slow store (S3, or any
other) with a size-bounded LRU directory of objects, as Pachyderm's
`kv/lru_cache.go` wraps a slow store with a fast one.  The slow store knows
nothing of the cache; the registry puts the cache in front of remote stores.

What the cache is trusted with, and what not:

* Reads.  A cached copy answers `get` and `local_path` (a file Arrow can
  memory-map).  Objects are named by their hash, so a copy is re-hashed
  before it is trusted (once per process for `local_path`); a damaged copy
  is dropped and fetched again, never reported as damaged data.
* Never writes or existence.  `put` always goes to the slow store, and
  `has`, `iterate`, `scan` and `ages` ask the slow store.  The cache
  directory outlives what it mirrors: a Ray worker's cache is keyed by the
  `s3://` address alone, and the bucket behind that address may have been
  emptied, recreated or swept by `gc` since.  A `put` that skipped the
  upload because the cache held the object would let a job land a commit
  whose chunks are not in the bucket, so a cached copy proves nothing about
  the slow store; the slow store decides (S3: a HEAD or the upload itself).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Iterable, Iterator

from .chunkstore import ChunkStore, fanout, object_id, unfan
from .pool import DaemonPool

DEFAULT_WORKERS = 32



class CachedStore(ChunkStore):
    def __init__(self, slow: ChunkStore, directory: str, max_bytes: int, *, workers: int = DEFAULT_WORKERS):
        self.slow = slow
        self.cache = DirCache(directory, max_bytes)
        self._downloads = DaemonPool(workers, "dpl-cache-get")
        self._lock = threading.Lock()
        self._fetching: dict[bytes, Future] = {}  # downloads into the cache, in flight
        self._verified: set[bytes] = set()  # cache files re-hashed by this process
        # What the slow store can do for maintenance, a cache changes nothing about.
        self.tmp, self.trash = slow.tmp, slow.trash
        self.tells_ages, self.refreshes_age_on_reuse = slow.tells_ages, slow.refreshes_age_on_reuse
        self.remote = slow.remote  # a miss goes to the slow store

    # ------------------------------------------------------------ maintenance

    def ages(self) -> Iterator[tuple[bytes, float, int]]:
        return self.slow.ages()

    def delete_if_older(self, oid: bytes, cutoff: float) -> int | None:
        freed = self.slow.delete_if_older(oid, cutoff)
        if freed is not None:
            self._forget(oid)
        return freed

    def restore_trash(self) -> int:
        return self.slow.restore_trash()

    def recording(self):
        return self.slow.recording()

    # ----------------------------------------------------------------- write

    def put(self, oid: bytes, data) -> bool:
        new = self.slow.put(oid, data)  # always: see the module's docstring
        if not self.cache.contains(oid):
            try:
                self.cache.insert(oid, data)  # the writer's own outputs are often read next
            except OSError:
                pass  # a cache that cannot be written costs speed, not data
        return new

    def delete(self, oid: bytes) -> None:
        self._forget(oid)
        self.slow.delete(oid)

    def sync(self) -> None:
        self.slow.sync()

    def _forget(self, oid: bytes) -> None:
        self.cache.discard(oid)
        with self._lock:
            self._verified.discard(oid)

    # ------------------------------------------------------------------ read

    def has(self, oid: bytes) -> bool:
        return self.slow.has(oid)

    def iterate(self) -> Iterator[bytes]:
        return self.slow.iterate()

    def scan(self) -> Iterator[tuple[bytes, bytes | None]]:
        """The slow store's bytes, never the cache's (fsck checks what is stored)."""
        return self.slow.scan()

    def get(self, oid: bytes) -> bytes:
        with self._lock:
            download = self._fetching.get(oid)
        if download is not None:
            return download.result()  # a prefetch of it is under way
        data = self.cache.read(oid)
        if data is not None:
            return data
        return self._download(oid)

    def prefetch(self, oids: Iterable[bytes]) -> None:
        """Start downloading, in parallel, every object of `oids` not cached yet.

        A later
        `get` or `local_path` of one of them waits for its download.  Errors
        surface there, not here.
        """
        for oid in dict.fromkeys(oids):
            if not self.cache.contains(oid):
                self._download_once(oid)

    def local_path(self, oid: bytes) -> str | None:
        path = self.cache.path(oid)
        with self._lock:
            trusted = oid in self._verified and oid not in self._fetching
        if trusted and os.path.exists(path):
            self.cache.touch(oid, path)
            return path
        data = self.get(oid)  # re-hashes the cached copy, or downloads and caches the object
        if object_id(data) != oid or not os.path.exists(path):
            # Damaged in the slow store (the caller's read reports it), too big
            # for the cache, or evicted meanwhile: the slow store's own file, if any.
            return self.slow.local_path(oid)
        with self._lock:
            self._verified.add(oid)
        return path

    def _download(self, oid: bytes) -> bytes:
        data = self.slow.get(oid)
        if object_id(data) == oid:  # damaged bytes are returned (for the caller to report), never cached
            try:
                self.cache.insert(oid, data)
            except OSError:
                pass
            with self._lock:
                self._verified.add(oid)
        return data

    def _download_once(self, oid: bytes) -> Future:
        """The one download of `oid` in flight in this process (started if need be)."""
        with self._lock:
            future = self._fetching.get(oid)
            if future is None:
                future = self._downloads.submit(self._download, oid)
                self._fetching[oid] = future
                future.add_done_callback(lambda _f, oid=oid: self._forget_fetch(oid))
        return future

    def _forget_fetch(self, oid: bytes) -> None:
        with self._lock:
            self._fetching.pop(oid, None)


class DirCache:
    """A size-bounded LRU directory of objects, shared by every process of a store.

    Recency is the file's mtime (touched on use), so processes share one
    order; each process keeps its own running total and evicts the least
    recently used files when an insert takes it over the bound.  A file
    evicted under another process's feet is simply fetched again (and an
    open memory map of it stays valid).
    """

    def __init__(self, root: str, max_bytes: int):
        self.root = root
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, int] | None = None  # oid -> size, oldest first; loaded lazily
        self._total = 0

    def path(self, oid: bytes) -> str:
        return os.path.join(self.objects, fanout(oid))

    def read(self, oid: bytes) -> bytes | None:
        """The cached bytes of `oid` if present and intact."""
        path = self.path(oid)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if object_id(data) != oid:
            self.discard(oid)
            return None
        self.touch(oid, path)
        return data

    def contains(self, oid: bytes) -> bool:
        return os.path.exists(self.path(oid))

    def touch(self, oid: bytes, path: str | None = None) -> None:
        try:
            os.utime(path or self.path(oid))
        except FileNotFoundError:
            return
        with self._lock:
            if self._entries is not None and oid in self._entries:
                self._entries.move_to_end(oid)

    def insert(self, oid: bytes, data) -> str | None:
        """Store `data` (tmp file + rename); None if it can never fit."""
        size = memoryview(data).nbytes
        if size > self.max_bytes // 4:
            return None
        path = self.path(oid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        tmp = os.path.join(self.tmp, f"{oid.hex()}.{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        with self._lock:
            entries = self._load()
            self._total += size - entries.pop(oid, 0)
            entries[oid] = size
            if self._total > self.max_bytes:
                self._evict(int(self.max_bytes * 0.9))
        return path

    def discard(self, oid: bytes) -> None:
        try:
            os.unlink(self.path(oid))
        except FileNotFoundError:
            pass
        with self._lock:
            if self._entries is not None:
                self._total -= self._entries.pop(oid, 0)

    def _load(self) -> OrderedDict:
        if self._entries is None:
            found = []
            if os.path.isdir(self.objects):
                for fan in os.scandir(self.objects):
                    if not fan.is_dir():
                        continue
                    for entry in os.scandir(fan.path):
                        oid = unfan(f"{fan.name}/{entry.name}")
                        if oid is None:
                            continue
                        try:
                            st = entry.stat()
                        except OSError:
                            continue
                        found.append((st.st_mtime, oid, st.st_size))
            found.sort()
            self._entries = OrderedDict((oid, size) for _, oid, size in found)
            self._total = sum(size for _, _, size in found)
            self._drop_stale_tmp()
        return self._entries

    def _drop_stale_tmp(self) -> None:
        """Temporary files a killed process left (named oid.pid.thread)."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
                try:
                    os.unlink(os.path.join(self.tmp, name))
                except OSError:
                    pass

    def _evict(self, target: int) -> None:
        while self._total > target and self._entries:
            oid, size = self._entries.popitem(last=False)
            self._total -= size
            try:
                os.unlink(self.path(oid))
            except FileNotFoundError:
                pass
