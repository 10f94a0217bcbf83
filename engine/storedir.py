"""The store directory: finding it, creating it, and opening what it names.

A store is a directory (default `.dpl/` in the current directory, found again
from any sub-directory the way git finds `.git`; `DPL_STORE` overrides) that
holds `config.json`, the metadata database (or the URL of a shared one) and,
for the embedded default, the chunk store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ExecutorUnavailable
from .executors import KINDS
from ..storage import registry
from ..storage.chunkstore import ChunkStore
from ..storage.errors import StoreExists, StoreNotFound
from ..storage.metadata import Database, is_url, open_database

STORE_DIR = ".dpl"
CONFIG = "config.json"


def find_store(start: str | os.PathLike | None = None) -> Path:
    env = os.environ.get("DPL_STORE")
    if env:
        path = Path(env)
        if (path / CONFIG).exists():
            return path
        raise StoreNotFound(f"DPL_STORE points at {env}, which is not a dpl store.", hint="Run `dpl init` there first.")
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / STORE_DIR / CONFIG).exists():
            return directory / STORE_DIR
    raise StoreNotFound(
        "This directory is not inside a dpl store.",
        hint="Run `dpl init` to create one here, or set DPL_STORE.",
    )


def init_store(
    path: str | os.PathLike | None = None,
    *,
    object_store: str | None = None,
    durable: bool = True,
    cache_bytes: int | None = None,
    executor: str = "local",
    metadata: str | None = None,
) -> Path:
    """Create a store; `path` defaults to DPL_STORE or ./.dpl.

    `object_store` is a chunk-store URL (storage/registry.py): "local"
    (chunks under the store directory), a directory, `s3://BUCKET/PREFIX`
    or `memory://NAME`; `cache_bytes` bounds a remote one's local read cache.
    `executor` is where datums run unless a spec or a call says otherwise.
    `metadata` is a `postgresql://` URL for metadata shared by many
    machines; by default it is a SQLite file in the store directory.
    """
    root = Path(path or os.environ.get("DPL_STORE") or Path.cwd() / STORE_DIR)
    if (root / CONFIG).exists():
        raise StoreExists(f"A dpl store already exists at {root}.")
    if executor not in KINDS:
        raise ExecutorUnavailable(f"Unknown executor {executor!r}.", hint=f"Use one of: {', '.join(KINDS)}.")
    config = {"format": 1, "object_store": registry.normalize(object_store), "durable": durable, "executor": executor}
    if metadata:
        if not is_url(metadata):
            raise StoreNotFound(f"Metadata {metadata!r} is not a PostgreSQL URL.", hint="Use postgresql://USER@HOST/DB, or leave it out for SQLite.")
        config["metadata"] = metadata
    if registry.is_remote(config["object_store"]):
        config["cache_bytes"] = cache_bytes or registry.DEFAULT_CACHE_BYTES
    # Makes the chunk directories, or checks the bucket: a wrong URL, bucket
    # or credential fails here, not at the first put.
    registry.open_chunk_store(config["object_store"], root, config, create=True)
    root.mkdir(parents=True, exist_ok=True)
    open_metadata(root, config).close()
    tmp = root / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, root / CONFIG)  # the config appears last: a half-made store is never found
    return root


def open_metadata(root: Path, config: dict) -> Database:
    """The store's metadata database: its PostgreSQL URL, or meta.db beside the config."""
    return open_database(config.get("metadata") or str(root / "meta.db"))


def open_chunk_store(root: Path, config: dict) -> ChunkStore:
    """The store's chunk store, by its config's URL (see storage/registry.py)."""
    return registry.open_chunk_store(config.get("object_store", "local"), root, config)
