"""The chunk store interface: immutable objects named by the hash of their bytes.

Chunks of file data and serialised file indexes both live here.  Because an
object's name is its content hash, `put` is idempotent and concurrent writers
of the same object cannot conflict; the metadata database decides which
objects are reachable.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Iterable, Iterator

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


class ChunkStore(abc.ABC):
    """A flat namespace of immutable objects keyed by 16-byte ids.

    Backends (local.py, s3.py, memory.py, and cache.py's wrapper) subclass
    it, are chosen by URL in registry.py and built by a `from_url`
    classmethod; tests/test_chunkstores.py is the contract every one passes.

    Beyond the core, a store declares what maintenance it can do (the
    capabilities below have safe defaults), so gc, fsck and repair ask it
    through one interface instead of probing for attributes.
    """

    # ------------------------------------------------------------------ core

    @abc.abstractmethod
    def put(self, oid: bytes, data) -> bool:
        """Store `data` under `oid` (durable once `sync()` returned); return
        False if it was already there.  A store may skip the write only for
        an object it has checked is stored, never on the word of a cache."""

    @abc.abstractmethod
    def get(self, oid: bytes) -> bytes:
        """The stored bytes (as stored: the caller checks them against `oid`);
        `Corruption` if the object is missing."""

    @abc.abstractmethod
    def has(self, oid: bytes) -> bool: ...

    @abc.abstractmethod
    def delete(self, oid: bytes) -> None: ...

    @abc.abstractmethod
    def iterate(self) -> Iterator[bytes]:
        """Every stored object id, in no particular order."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every object put so far durable (survive power loss)."""

    def local_path(self, oid: bytes) -> str | None:
        """A local file holding the object (for zero-copy reads), if any."""
        return None

    # ---------------------------------------------------------- capabilities

    # A directory of half-written objects and one of objects an interrupted
    # gc moved aside, for stores that keep them (gc and fsck look there for
    # what killed processes left behind).
    tmp: str | None = None
    trash: str | None = None
    # True if `ages()` lists objects with their last-modified times.
    tells_ages: bool = False
    # True if putting an object that exists renews its age (the local disk
    # touches it; S3 does not rewrite it), so time alone tells a running
    # writer's objects from garbage and `delete_if_older` is safe.
    refreshes_age_on_reuse: bool = False
    # True if a read may wait on the network: a server then reads from its
    # thread pool, never on its event loop.
    remote: bool = False

    def prefetch(self, oids: Iterable[bytes]) -> None:
        """Hint that `oids` will be read soon (a remote store fetches them in parallel)."""

    def scan(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every stored object with its bytes as the backend holds them (never
        a cache's copy); None for an object that vanished after it was listed."""
        for oid in self.iterate():
            try:
                yield oid, self.get(oid)
            except Corruption:
                yield oid, None

    def ages(self) -> Iterator[tuple[bytes, float, int]]:
        """(id, last-modified epoch seconds, size) of every object; only if `tells_ages`."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell its objects' ages")

    def delete_if_older(self, oid: bytes, cutoff: float) -> int | None:
        """Delete an object unless it was touched at or after `cutoff`; the
        bytes freed, or None if kept.  Only if `refreshes_age_on_reuse`."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete by age")

    def restore_trash(self) -> int:
        """Put back what a killed gc moved aside; how many objects."""
        return 0

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[bytes]]:
        """Collect the ids of the objects created meanwhile, so that a write
        that fails can take back what it stored.  A store that cannot says
        nothing (the write then leaves its objects to gc)."""
        yield []


# The engine's spelling of two capabilities, kept for its call sites.


def prefetch(store: ChunkStore, oids) -> None:
    store.prefetch(oids)


def scan(store: ChunkStore) -> Iterator[tuple[bytes, bytes | None]]:
    return store.scan()
