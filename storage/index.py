"""File indexes: the sorted file list of a commit, as layered Arrow tables.

A commit's index is a list of *layers*, oldest first.  Each layer is an Arrow
table sorted by path (stored as an Arrow IPC file in the chunk store) holding
the files written by one change, plus tombstones for deletions.  A commit
shares its parent's layers and adds its own, so writing k files costs O(k)
whatever the size of the repo; the newest layer wins for a path.  Layers are
merged in the background of later commits (`plan_compaction`) so that a read
never has to combine more than a handful of them, the way Pachyderm's
filesets and LSM trees do it.

Tombstones: a row with `deleted` set removes its path from older layers; if
its path ends in `/` it removes the whole directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpl.storage.chunking import REFS_TYPE
from dpl.storage.chunkstore import ChunkStore, object_id
from dpl.storage.errors import Corruption

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("hash", pa.binary(16)),
        ("refs", REFS_TYPE),
        ("deleted", pa.bool_()),
        # The datum that wrote the file, in a pipeline's output repo (null in
        # user repos): provenance of a file is one lookup, and removing a
        # datum's outputs is a filter on this column, not a scan of logs.
        ("datum", pa.binary(16)),
    ]
)
EMPTY = SCHEMA.empty_table()
MAX_LAYERS = 8


@dataclass(frozen=True)
class Layer:
    id: bytes
    rows: int

    def to_json(self) -> dict:
        return {"id": self.id.hex(), "rows": self.rows}

    @classmethod
    def from_json(cls, d: dict) -> "Layer":
        return cls(bytes.fromhex(d["id"]), int(d["rows"]))


def make_table(paths, sizes, hashes, refs, deleted=None, datums=None) -> pa.Table:
    n = len(paths)
    table = pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "hash": pa.array(hashes, pa.binary(16)),
            "refs": refs if isinstance(refs, pa.Array) else pa.array(refs, REFS_TYPE),
            "deleted": pa.array(deleted if deleted is not None else np.zeros(n, bool), pa.bool_()),
            "datum": datums if isinstance(datums, pa.Array) else pa.array(datums if datums is not None else [None] * n, pa.binary(16)),
        },
        schema=SCHEMA,
    )
    return sort_unique(table)


def sort_unique(table: pa.Table) -> pa.Table:
    """Sort by path; where a path repeats, the later row wins."""
    if table.num_rows < 2:
        return table
    order = np.arange(table.num_rows)
    table = table.append_column("_order", pa.array(order))
    table = table.take(pc.sort_indices(table, [("path", "ascending"), ("_order", "descending")]))
    return _first_of_each_path(table).drop_columns(["_order"])


def _first_of_each_path(table: pa.Table) -> pa.Table:
    paths = table["path"]
    if len(paths) < 2:
        return table
    differs = pc.not_equal(paths.slice(1), paths.slice(0, len(paths) - 1))
    mask = pa.concat_arrays([pa.array([True])] + differs.chunks)
    return table.filter(mask)


def write_layer(store: ChunkStore, table: pa.Table) -> Layer:
    return Layer(write_table(store, table), table.num_rows)


def write_table(store: ChunkStore, table: pa.Table) -> bytes:
    """Store any Arrow table as one IPC-file object; return its id."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    data = sink.getvalue()
    oid = object_id(data)
    store.put(oid, data)
    return oid


def read_table(store: ChunkStore, oid: bytes) -> pa.Table:
    """Read an Arrow table object (memory-mapped where the store is local)."""
    try:
        path = store.local_path(oid)
        source = pa.memory_map(path) if path is not None else pa.py_buffer(store.get(oid))
        return pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise Corruption(f"Table object {oid.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None


def read_layer(store: ChunkStore, layer: Layer) -> pa.Table:
    try:
        path = store.local_path(layer.id)
        if path is not None:
            # Memory-mapped and zero-copy: a million-row layer costs nothing
            # until a column is touched.
            source = pa.memory_map(path)
        else:
            source = pa.py_buffer(store.get(layer.id))
        table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise Corruption(f"File index {layer.id.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None
    if table.num_rows != layer.rows or not table.schema.equals(SCHEMA):
        raise Corruption(f"File index {layer.id.hex()} is damaged.", hint="Run `dpl fsck`.")
    return table


def merge(tables: list[pa.Table], *, keep_tombstones: bool = False) -> pa.Table:
    """Combine layers (oldest first) into one sorted table; newest wins."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return EMPTY
    if len(tables) == 1:
        merged = tables[0]
    else:
        live = []
        for i, t in enumerate(tables):
            newer = tables[i + 1 :]
            if newer:
                t = _drop_shadowed(t, newer)
            live.append(t)
        merged = pa.concat_tables(live)
        merged = merged.take(pc.sort_indices(merged, [("path", "ascending")]))
    if not keep_tombstones and pc.any(merged["deleted"]).as_py():
        merged = merged.filter(pc.invert(merged["deleted"]))
    return merged


def _drop_shadowed(table: pa.Table, newer: list[pa.Table]) -> pa.Table:
    """Rows of `table` not overwritten or deleted by any newer layer."""
    shadow = pa.chunked_array([c for t in newer for c in t["path"].chunks], pa.string())
    keep = pc.invert(pc.is_in(table["path"], value_set=shadow.combine_chunks()))
    for t in newer:
        dirs = t.filter(pc.and_(t["deleted"], pc.ends_with(t["path"], "/")))["path"].to_pylist()
        for d in dirs:
            keep = pc.and_(keep, pc.invert(pc.starts_with(table["path"], d)))
    return table.filter(keep)


def lookup(tables: list[pa.Table], paths) -> pa.Table:
    """The current rows (tombstones removed) for just these paths."""
    wanted = pa.array(list(paths), pa.string())
    subset = [t.filter(pc.is_in(t["path"], value_set=wanted)) for t in tables]
    # Directory tombstones in the subset's layers still apply.
    dirs = [t.filter(pc.and_(t["deleted"], pc.ends_with(t["path"], "/"))) for t in tables]
    return merge([pa.concat_tables([d, s]) if d.num_rows else s for d, s in zip(dirs, subset)])


def under(tables: list[pa.Table], prefix: str) -> pa.Table:
    """The current files at or beneath a directory prefix (`/` for all)."""
    if prefix == "/":
        return merge(tables)
    return merge([t.filter(pc.or_(pc.starts_with(t["path"], prefix.rstrip("/") + "/"), pc.equal(t["path"], prefix))) for t in tables])


def plan_compaction(layers: list[Layer]) -> tuple[int, int] | None:
    """Which run of trailing layers to merge, as a slice (start, end), if any.

    Merge the newest layers while the older neighbour is no more than twice
    as big (a size-tiered LSM rule: each row is rewritten O(log n) times), and
    always keep the count at or below MAX_LAYERS.
    """
    if len(layers) < 2:
        return None
    start = len(layers) - 1
    tail_rows = layers[-1].rows
    while start > 0 and layers[start - 1].rows <= 2 * tail_rows:
        start -= 1
        tail_rows += layers[start].rows
    if start == len(layers) - 1:
        if len(layers) <= MAX_LAYERS:
            return None
        start = len(layers) - 2
    return start, len(layers)


def compact(store: ChunkStore, layers: list[Layer]) -> list[Layer]:
    plan = plan_compaction(layers)
    if plan is None:
        return layers
    start, end = plan
    tables = [read_layer(store, l) for l in layers[start:end]]
    # Tombstones matter only while older layers remain below the merged one.
    merged = merge(tables, keep_tombstones=start > 0)
    if merged.num_rows == 0:
        return layers[:start]
    return layers[:start] + [write_layer(store, merged)]
