"""An in-memory chunk store, for tests and throw-away stores.

`memory://NAME` names one dict per process, so a store opened twice in one
process (as `Store.open` after `Store.init` does) sees the same objects, as
fsspec's memory filesystem does.  Nothing survives the process.
"""

from __future__ import annotations

import threading
from typing import Iterator

from .chunkstore import ChunkStore
from .errors import Corruption

_NAMED: dict[str, dict[bytes, bytes]] = {}
_LOCK = threading.Lock()


class MemoryChunkStore(ChunkStore):
    def __init__(self, objects: dict[bytes, bytes] | None = None):
        self.objects = {} if objects is None else objects

    @classmethod
    def from_url(cls, url: str, *, root: str, options: dict, create: bool = False) -> "MemoryChunkStore":
        with _LOCK:
            return cls(_NAMED.setdefault(url, {}))

    def put(self, oid: bytes, data) -> bool:
        if oid in self.objects:
            return False
        self.objects[oid] = bytes(data)  # a copy: the caller reuses its buffer
        return True

    def get(self, oid: bytes) -> bytes:
        try:
            return self.objects[oid]
        except KeyError:
            raise Corruption(f"Object {oid.hex()} is missing from the store.", hint="Run `dpl fsck`.") from None

    def has(self, oid: bytes) -> bool:
        return oid in self.objects

    def delete(self, oid: bytes) -> None:
        self.objects.pop(oid, None)

    def iterate(self) -> Iterator[bytes]:
        yield from list(self.objects)  # a snapshot: a put meanwhile does not break the loop

    def local_path(self, oid: bytes) -> None:
        return None

    def sync(self) -> None:
        pass
