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


# The one fan-out of object names, `ab/cdef...` (as git and dvc-objects do):
# the local store's files, the S3 keys and the read cache's files all use it,
# so that no directory (or S3 listing page) grows past a few thousand entries
# and every backend lays objects out the same way.


def fanout(oid: bytes) -> str:
    """Where `oid` lives below an objects directory or key prefix: `ab/cdef...`."""
    h = oid.hex()
    return f"{h[:2]}/{h[2:]}"


def unfan(name: str) -> bytes | None:
    """The id a fan-out name (`ab/cdef...`) spells, or None for anything else
    (a temporary file, a stray key)."""
    if len(name) != 33 or name[2] != "/":
        return None
    try:
        return bytes.fromhex(name[:2] + name[3:])
    except ValueError:
        return None


class ChunkStore(Protocol):
    """A flat namespace of immutable objects keyed by 16-byte ids.

    Backends (local.py, s3.py, memory.py) are chosen by URL in registry.py
    and built by a `from_url` classmethod; tests/test_chunkstores.py is the
    contract every one of them passes.
    """

    def put(self, oid: bytes, data) -> bool:
        """Store `data` under `oid` (durable once `sync()` returned); return
        False if it was already there.  A store may skip the write only for
        an object it has checked is stored, never on the word of a cache."""

    def get(self, oid: bytes) -> bytes:
        """The stored bytes (as stored: the caller checks them against `oid`);
        `Corruption` if the object is missing."""

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
