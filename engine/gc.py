"""`gc`: delete the objects nothing refers to, and nothing else.

Mark: every object the metadata refers to is live: the file-index layers of
every commit (finished or open; the full index and the commit's own layers),
the chunks those layers point at, every job's datum list, and every datum
output batch with the chunks it points at (a later job carries those forward).
Sweep: every other object is deleted, unless it was written or reused at or
after the *cutoff*: the older of "now minus the grace period" and the start
of the oldest live writer (`writers`).  A writer's new chunks and the old
chunks it reuses (`put` refreshes their mtime) are therefore never taken from
under it, whatever the grace period; the grace period is a second belt for
writers that cannot register (an older dpl).

If a file index cannot be read, what it refers to is unknown: gc then deletes
nothing and says to run `dpl fsck --repair` first.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass, field

import pyarrow.compute as pc

from . import writers
from ..storage import index
from ..storage.errors import Corruption, DiskFull, DplError
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows

DEFAULT_GRACE_MINUTES = 10.0
CLOCK_SLACK = 2.0  # seconds: filesystem timestamps may lag time.time() a little
S3_CLOCK_SLACK = 60.0  # seconds: an object store's clock is another machine's
_TICK = 0.05  # more than the coarsest timestamp tick of a local filesystem


@dataclass
class GcReport:
    dry_run: bool = False
    live: int = 0  # objects something refers to
    objects: int = 0  # unreferenced objects deleted (or, dry run, that would be)
    bytes: int = 0
    young: int = 0  # unreferenced but newer than the cutoff: kept
    temp_files: int = 0
    temp_bytes: int = 0
    scratch_dirs: int = 0
    restored: int = 0  # objects an interrupted gc had moved away, put back
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def live_objects(store) -> set[bytes]:
    """Every object id the metadata refers to, directly or through an index."""
    layers: dict[bytes, int] = {}
    for commit in commit_rows.all_commits(store.db):
        for layer in commit.layers + commit.delta:
            layers[layer.id] = layer.rows
    batches = {bytes.fromhex(u.batch) for u in datum_rows.batch_uses(store.db)}
    lists = {bytes.fromhex(j.datum_list) for j in job_rows.with_datum_list(store.db)}
    live = set(layers) | batches | lists
    for oid, rows in layers.items():
        live.update(_chunks(index.read_layer(store.chunks, index.Layer(oid, rows)), oid))
    for oid in batches:
        live.update(_chunks(index.read_table(store.chunks, oid), oid))
    for oid in lists:
        if not store.chunks.has(oid):
            raise Corruption(f"The datum list {oid.hex()} of a job is missing.", hint="Run `dpl fsck --repair` first.")
    return live


def _chunks(table, oid: bytes) -> set[bytes]:
    if "refs" not in table.column_names:
        raise Corruption(f"Object {oid.hex()} is not a file index.", hint="Run `dpl fsck`.")
    flat = pc.list_flatten(table["refs"])
    return set(pc.unique(pc.struct_field(flat, "chunk")).to_pylist()) if len(flat) else set()


def collect_garbage(store, *, grace_minutes: float = DEFAULT_GRACE_MINUTES, dry_run: bool = False) -> GcReport:
    if grace_minutes < 0:
        raise DplError("The grace period cannot be negative.", hint="Pass --grace 0 or more (minutes).")
    report = GcReport(dry_run=dry_run)
    chunks = store.chunks
    if not dry_run:
        report.restored = chunks.restore_trash()
    # The cutoff is fixed before marking: a writer that lands a commit after
    # the mark was registered when we looked, or started after, so its
    # objects are newer than the cutoff.
    now = time.time()
    starts, dead = writers.live_writers(store)
    cutoff = min([now - grace_minutes * 60] + [s for s in starts]) - CLOCK_SLACK
    try:
        live = live_objects(store)
    except Corruption as e:
        raise Corruption(f"gc deleted nothing: {e.message}", hint="Run `dpl fsck --repair` first.") from None
    report.live = len(live)

    if chunks.refreshes_age_on_reuse:  # the local store: time alone tells garbage
        for oid, mtime, size in chunks.ages():
            if oid in live:
                continue
            if mtime >= cutoff:
                report.young += 1
                continue
            freed = size if dry_run else chunks.delete_if_older(oid, cutoff)
            if freed is None:
                report.young += 1
            else:
                report.objects += 1
                report.bytes += freed
    else:
        _sweep_holding_writers_off(store, report, grace_minutes, dry_run)

    _clean_temp(store, report, now - grace_minutes * 60, dry_run)
    if not dry_run:
        for path in dead:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return report


def _sweep_holding_writers_off(store, report: GcReport, grace_minutes: float, dry_run: bool) -> None:
    """For a backend whose reused objects keep their old age (S3: a writer
    that finds a chunk already there does not rewrite it), time alone cannot
    tell garbage from a running writer's chunks.  So gc sweeps only with every
    writer held off (none active when it starts, new ones wait until it is
    done); the grace period still keeps objects written recently by writers
    that could not register, by the object store's own clock."""
    chunks = store.chunks
    with writers.exclusive(store) as alone:
        live = live_objects(store)  # marked again inside the lock: writes may have landed meanwhile
        unreferenced = [row for row in chunks.ages() if row[0] not in live] if chunks.tells_ages else \
            [(oid, None, 0) for oid in chunks.iterate() if oid not in live]
        if not alone:
            report.young = len(unreferenced)
            report.notes.append("other commands are writing to this object store now; gc deletes from it only while nothing writes")
            return
        if grace_minutes > 0 and not chunks.tells_ages:
            report.young = len(unreferenced)
            report.notes.append("this object store cannot tell an object's age, so gc deletes from it only with --grace 0")
            return
        cutoff = time.time() - grace_minutes * 60 - S3_CLOCK_SLACK
        for oid, modified, size in unreferenced:
            if grace_minutes > 0 and modified >= cutoff:
                report.young += 1
                continue
            report.objects += 1
            report.bytes += size
            if not dry_run:
                chunks.delete(oid)


def discard_unlanded(store, created: list[bytes]) -> int:
    """Delete the objects a failed write created, unless something else may use them.

    Only when this write is the store's only writer: then no other process
    can have reused them before now, and one that reuses them from now on
    refreshes their mtime, which `delete_if_older` sees.  An object a commit
    refers to by now is kept.  Returns the bytes freed.
    """
    if not created or not store.chunks.refreshes_age_on_reuse or writers.own_depth(store) > 1:
        return 0
    time.sleep(2 * _TICK)  # so that our own newest objects are older than the cutoff below
    now = time.time()
    starts, _ = writers.live_writers(store, exclude_self=True)
    if starts:
        return 0
    try:
        live = live_objects(store)
    except DplError:
        return 0
    freed = 0
    for oid in set(created) - live:
        freed += store.chunks.delete_if_older(oid, now - _TICK) or 0
    return freed


def cleans_up_after_disk_full(method):
    """Decorate a write: when it fails for lack of space, it takes back the
    objects it stored, so the space is free again at once."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.chunks.recording() as created:
            try:
                return method(self, *args, **kwargs)
            except DiskFull:
                discard_unlanded(self, created)
                raise

    return wrapper


def _clean_temp(store, report: GcReport, older: float, dry_run: bool) -> None:
    """Temporary files of killed writers and scratch directories of dead jobs."""
    tmp = store.chunks.tmp
    if tmp and os.path.isdir(tmp):
        for name in os.listdir(tmp):
            path = os.path.join(tmp, name)
            parts = name.split(".")
            pid = parts[1] if len(parts) >= 3 else ""
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if (writers.pid_alive(pid) if pid.isdigit() else st.st_mtime >= older):
                continue  # a live writer's object in the making
            report.temp_files += 1
            report.temp_bytes += st.st_size
            if not dry_run:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    jobs_dir = store.root / "tmp" / "jobs"
    if jobs_dir.is_dir():
        live_nonces = set()
        for owner in job_rows.running_owners(store.db):
            host, pid, nonce = (owner.split(":") + ["", ""])[:3]
            if writers.pid_alive(pid):
                live_nonces.add(nonce)
        for d in jobs_dir.iterdir():
            if d.name.rsplit("-", 1)[-1] in live_nonces or _recent(d, older):
                continue  # a running job's (or one claimed since gc started)
            report.scratch_dirs += 1
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)


def _recent(path, older: float) -> bool:
    try:
        return path.stat().st_mtime >= older
    except FileNotFoundError:
        return True
