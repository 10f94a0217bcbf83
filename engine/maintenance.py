"""Checking and mending a store: the `Maintenance` component.

`fsck` reads everything the metadata refers to and reports what is missing
or damaged, `repair` mends what can be mended (from the store itself, or
from source files the user names), and `gc` deletes objects nothing refers
to.  The work lives in `fsck.py`, `repair.py` and `gc.py`; their functions
take the parts they read (`db`, `chunks`, `root`, `repos`, `files`), which
this component holds, so they are reached like every other part of the
engine: `store.fsck()`, `store.repair()`, `store.gc()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..storage.chunkstore import ChunkStore
from ..storage.metadata.db import Database
from .repos import Repos

if TYPE_CHECKING:
    from .files import Files
    from .fsck import Report
    from .gc import GcReport
    from .repair import RepairReport


class Maintenance:
    def __init__(self, db: Database, chunks: ChunkStore, root: Path, repos: Repos, files: "Files"):
        self.db, self.chunks, self.root = db, chunks, root
        self.repos, self.files = repos, files

    def fsck(self, progress=None) -> "Report":
        """Every problem of the store: missing or damaged objects, dangling refs, broken provenance."""
        from .fsck import fsck

        return fsck(self, progress)

    def repair(self, *, sources: list[str] = ()) -> "RepairReport":
        """Mend what fsck finds; `sources` are local files or directories that may hold lost bytes."""
        from .repair import repair

        return repair(self, sources=sources)

    def gc(self, *, grace_minutes: float | None = None, dry_run: bool = False) -> "GcReport":
        """Delete objects nothing refers to (sparing what live writers may still refer to)."""
        from .gc import DEFAULT_GRACE_MINUTES, collect_garbage

        return collect_garbage(self, grace_minutes=DEFAULT_GRACE_MINUTES if grace_minutes is None else grace_minutes, dry_run=dry_run)

    def live_objects(self) -> set[bytes]:
        """Every object id the metadata refers to, directly or through an index."""
        from .gc import live_objects

        return live_objects(self)
