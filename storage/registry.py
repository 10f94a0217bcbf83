"""Chunk stores by URL: which backend a store's `object_store` names.

As fsspec's `registry.py` does: a table of scheme -> "module:Class", a
backend imported only when a store of its kind is opened (so a command on a
local store never imports boto3), and what to install when a backend's
dependency is missing.  The URLs:

    local              chunks/ inside the store directory (the embedded default)
    /DIR, file:///DIR  a chunk directory elsewhere (a shared disk)
    s3://BUCKET/PREFIX an S3 bucket (AWS, MinIO, SeaweedFS, Ceph)
    memory://NAME      a dict in this process (tests)

Remote backends get a local read cache in front (`cache.CachedStore`, in
`cache/` under the store directory, bounded by the config's `cache_bytes`);
the backends themselves know nothing of it.  Every backend class offers
`from_url(url, root=, options=, create=)`: `root` is the store directory,
`options` the store's config, and `create` says the store is being made
(make the directories, or check that the bucket can be used).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass

from .chunkstore import ChunkStore
from .errors import StorageUnavailable, StoreNotFound

DEFAULT_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class Backend:
    target: str  # "module:Class", the module relative to this package
    needs: tuple[str, ...] = ()  # top-level imports it cannot work without
    install: str | None = None  # the command that installs them
    remote: bool = False  # reads go through a local read cache


BACKENDS: dict[str, Backend] = {
    "file": Backend("local:LocalChunkStore"),
    "memory": Backend("memory:MemoryChunkStore"),
    "s3": Backend("s3:S3ChunkStore", needs=("boto3",), install="pip install 'dpl[s3]'", remote=True),
}


def scheme(url: str) -> str:
    """The registry key of `url`: `local` and plain paths are `file`."""
    if url == "local" or "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def normalize(url: str | None) -> str:
    """`url` as a store's config records it: `local` for the default, an
    absolute path for a directory (the store may be opened from elsewhere)."""
    if not url or url == "local":
        return "local"
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    return url


def backend(url: str) -> Backend:
    found = BACKENDS.get(scheme(url))
    if found is None:
        kinds = ", ".join(f"{k}://" for k in BACKENDS if k != "file")
        raise StoreNotFound(f"Object store {url!r} is not supported by this dpl.", hint=f"Use local, a directory path, or one of {kinds}.")
    return found


def is_remote(url: str) -> bool:
    return backend(url).remote


def open_chunk_store(url: str, root: str | os.PathLike, options: dict, *, create: bool = False) -> ChunkStore:
    """The chunk store `url` names, for the store directory `root` whose
    config is `options` (`durable`, `cache_bytes`)."""
    found = backend(url)
    cls = _load(scheme(url), found)
    store = cls.from_url(url, root=str(root), options=options, create=create)
    if found.remote:
        cache_bytes = int(options.get("cache_bytes", DEFAULT_CACHE_BYTES))
        if cache_bytes > 0:
            from .cache import CachedStore

            store = CachedStore(store, os.path.join(root, "cache"), cache_bytes)
    return store


def _load(kind: str, found: Backend):
    for name in found.needs:
        if importlib.util.find_spec(name) is None:
            raise _missing(kind, name, found)
    module, _, cls = found.target.partition(":")
    try:
        return getattr(importlib.import_module(f".{module}", __package__), cls)
    except ImportError as e:
        if e.name and e.name.split(".")[0] in found.needs:
            raise _missing(kind, e.name.split(".")[0], found) from None
        raise


def _missing(kind: str, name: str, found: Backend) -> StorageUnavailable:
    return StorageUnavailable(f"The {kind} object store needs {name} (not installed).", hint=found.install)
