"""The chunk store Protocol: immutable objects named by the hash of their bytes.

Chunks of file data and serialised file indexes both live here.  Because an
object's name is its content hash, `put` is idempotent and concurrent writers
of the same object cannot conflict; the metadata database decides which
objects are reachable.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import xxhash

from .errors import Corruption


def object_id(data) -> bytes:
    """The 16-byte xxh3-128 digest that names an object."""
    return xxhash.xxh3_128_digest(data)


class ChunkStore(Protocol):
    """A flat namespace of immutable objects keyed by 16-byte ids."""

    def put(self, oid: bytes, data) -> bool:
        """Store `data` under `oid`; return False if it was already there."""

    def get(self, oid: bytes) -> bytes: ...

    def has(self, oid: bytes) -> bool: ...

    def delete(self, oid: bytes) -> None: ...

    def iterate(self) -> Iterator[bytes]:
        """Every stored object id, in no particular order."""

    def local_path(self, oid: bytes) -> str | None:
        """A local file holding the object (for zero-copy reads), if any."""

    def sync(self) -> None:
        """Make every object put so far durable (survive power loss)."""


# Optional capabilities.  A backend may offer more than the Protocol (the S3
# store does); engine code reaches those through these helpers so that every
# backend keeps working with the Protocol alone.


def prefetch(store: ChunkStore, oids) -> None:
    """Hint that `oids` will be read soon (a remote store fetches them in parallel)."""
    fetch = getattr(store, "prefetch", None)
    if fetch is not None:
        fetch(oids)


def scan(store: ChunkStore) -> Iterator[tuple[bytes, bytes | None]]:
    """Every stored object with its bytes as the backend holds them (never a
    cache's copy); None for an object that vanished after it was listed."""
    own = getattr(store, "scan", None)
    if own is not None:
        yield from own()
        return
    for oid in store.iterate():
        try:
            yield oid, store.get(oid)
        except Corruption:
            yield oid, None
