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

(Over 400 lines: merging, looking up, collision checks and compaction are one
algorithm over sorted layers and share its helpers, and every layer, of
either format, is read and written here, behind one cache.)

pyarrow is imported when an index is first touched, not with this module:
importing pyarrow (and numpy, which it loads) costs ~0.15 s, more than a
whole `dpl list-repo` may take, and most commands never touch an index.
`SCHEMA` and `EMPTY` are made on first use for the same reason, and
Arrow's compute functions are called through storage/arrowcompute.py (`pc`
here), not pyarrow.compute, whose import alone costs a listing ~0.1 s.  Layers
of few rows are stored in storage/smalllayer.py's format, which needs no
pyarrow at all; `load_layer` returns one of those as it is, `read_layer`
always an Arrow table, and both read either format.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import os
import threading
from typing import TYPE_CHECKING

from . import arrowcompute as pc
from . import smalllayer
from .chunkstore import ChunkStore, object_id
from .errors import Corruption
from .layer import Layer  # noqa: F401  (index.Layer is the name engine code uses)
from .layercache import LayerCache
from .smalllayer import SmallLayer



class _OnFirstUse:
    """A module imported at its first attribute access, which then takes
    this stand-in's place among the module's globals (no cost after that)."""

    def __init__(self, name: str, alias: str):
        self._name, self._alias = name, alias

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        globals()[self._alias] = module
        return getattr(module, attr)


if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = _OnFirstUse("pyarrow", "pa")

MAX_LAYERS = 8
# Below this size a table object is read whole: mapping a small file costs
# more (~0.5 ms) than reading it (~0.1 ms), and a commit reads a few.
MMAP_FROM = 1 << 20


@functools.cache
def _schema():
    from .chunking import REFS_TYPE

    return pa.schema(
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


@functools.cache
def _empty():
    # Not Schema.empty_table(): it makes its columns as pa.array does, which imports pandas (~0.3 s).
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in _schema()], schema=_schema())


def __getattr__(name: str):
    """`SCHEMA` and `EMPTY`, made (with pyarrow) on first use."""
    if name == "SCHEMA":
        return _schema()
    if name == "EMPTY":
        return _empty()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tombstones(paths: list[str]) -> pa.Table:
    """A layer that deletes these paths (a path ending in `/`: a whole directory).

    Built as a small layer's table (from buffers), not by make_table, whose
    pa.array calls import pandas (~0.3 s) into a process that deletes a file."""
    return to_table(SmallLayer([smalllayer.Row(p, 0, bytes(16), (), True) for p in sorted(set(paths))]))


def make_table(paths, sizes, hashes, refs, deleted=None, datums=None) -> pa.Table:
    n = len(paths)
    # Typed values only: the first Python value whose Arrow type pyarrow must
    # infer (pa.repeat(False, n), pa.array([True])) imports dateutil, ~7 ms
    # of a 1-file put-file.
    table = pa.table(
        {
            "path": paths if isinstance(paths, (pa.Array, pa.ChunkedArray)) else pa.array(paths, pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "hash": pa.array(hashes, pa.binary(16)),
            "refs": refs if isinstance(refs, pa.Array) else pa.array(refs, _schema().field("refs").type),
            "deleted": _all_false(n) if deleted is None else pa.array(deleted, pa.bool_()),
            "datum": datums if isinstance(datums, pa.Array) else pa.array(datums if datums is not None else [None] * n, pa.binary(16)),
        },
        schema=_schema(),
    )
    return sort_unique(table)


def _all_false(n: int) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bytes((n + 7) // 8))])


def is_sorted_unique(paths) -> bool:
    """Whether a path column is strictly increasing (one vectorised pass)."""
    n = len(paths)
    return n < 2 or pc.all(pc.less(paths.slice(0, n - 1), paths.slice(1))).as_py()


def sort_unique(table: pa.Table) -> pa.Table:
    """Sort by path; where a path repeats, the later row wins."""
    if table.num_rows < 2 or is_sorted_unique(table["path"]):
        return table
    import numpy as np  # here: listing and diffing never sort, and the CLI starts faster without numpy

    table = table.append_column("_order", pa.array(np.arange(table.num_rows)))
    table = pc.take(table, pc.sort_indices(table, [("path", "ascending"), ("_order", "descending")]))
    return _first_of_each_path(table).drop_columns(["_order"])


def _first_of_each_path(table: pa.Table) -> pa.Table:
    paths = table["path"]
    if len(paths) < 2:
        return table
    from . import arrowcols  # not pa.array: it imports pandas

    differs = pc.not_equal(paths.slice(1), paths.slice(0, len(paths) - 1))
    mask = pa.concat_arrays([arrowcols.bools([True])] + differs.chunks)
    return pc.filter(table, mask)


def write_layer(store: ChunkStore, table: pa.Table) -> Layer:
    if table.num_rows <= smalllayer.SMALL_ROWS and table.schema.equals(_schema()):
        layer = write_small(store, _small_rows(table))
        _layers.remember(store, layer.id, table)
        return layer
    layer = Layer(write_table(store, table), table.num_rows)
    if table.schema.equals(_schema()):
        _layers.remember(store, layer.id, table)  # the commit that lands it reads it next
    return layer


def write_small(store: ChunkStore, rows: "list[smalllayer.Row] | SmallLayer") -> Layer:
    """Store a layer of few rows (sorted, unique) in the small format, without pyarrow."""
    layer = rows if isinstance(rows, SmallLayer) else SmallLayer(rows)
    data = smalllayer.encode(layer)
    oid = object_id(data)
    store.put(oid, data)
    _small.remember(store, oid, layer)  # the commit that lands it reads it next
    return Layer(oid, layer.num_rows)


def _small_rows(table: pa.Table) -> list[smalllayer.Row]:
    cols = table.to_pydict()
    refs = [[(r["chunk"], r["offset"], r["length"]) for r in refs] for refs in cols["refs"]]
    return smalllayer.rows_of(cols["path"], cols["size"], cols["hash"], refs, cols["deleted"], cols["datum"])


def to_table(layer: SmallLayer) -> pa.Table:
    """A small layer as the Arrow table of the same rows (built from buffers: see arrowcols)."""
    from . import arrowcols  # imports pyarrow: only here, where a table is wanted

    rows = layer.rows
    ref_type = _schema().field("refs").type
    flat = [ref for r in rows for ref in r.refs]
    refs = pa.StructArray.from_arrays(
        [arrowcols.fixed_binary([c for c, _, _ in flat], 16), arrowcols.int64s([o for _, o, _ in flat]), arrowcols.int64s([n for _, _, n in flat])],
        fields=list(ref_type.value_type),
    )
    return pa.table(
        {
            "path": arrowcols.strings(layer.paths),
            "size": arrowcols.int64s([r.size for r in rows]),
            "hash": arrowcols.fixed_binary([r.hash for r in rows], 16),
            "refs": arrowcols.lists([r.refs for r in rows], refs, ref_type),
            "deleted": arrowcols.bools([r.deleted for r in rows]),
            "datum": arrowcols.fixed_binary([r.datum for r in rows], 16),
        },
        schema=_schema(),
    )


def write_table(store: ChunkStore, table: pa.Table) -> bytes:
    """Store any Arrow table as one IPC-file object; return its id."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    data = sink.getvalue()
    oid = object_id(data)
    store.put(oid, data)
    return oid


def _source(store: ChunkStore, oid: bytes):
    """A table object's bytes for Arrow.  A big local one is memory-mapped,
    zero-copy (a million-row layer costs nothing until a column is touched);
    a small one is read whole, which is cheaper than mapping it."""
    path = store.local_path(oid)
    if path is None:
        return pa.py_buffer(store.get(oid))
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size >= MMAP_FROM:
            return pa.memory_map(path)
        return pa.py_buffer(f.read())


def _fetch(store: ChunkStore, oid: bytes) -> tuple[bytes | None, object]:
    """(a small layer's bytes, None), or (None, an Arrow source) for any
    other object: a local one is not read here (only its first bytes are
    looked at), a remote one is fetched once and handed on."""
    path = store.local_path(oid)
    if path is None:
        data = store.get(oid)
        return (data, None) if smalllayer.is_small(data) else (None, pa.py_buffer(data))
    with open(path, "rb") as f:
        head = f.read(len(smalllayer.MAGIC))
        if smalllayer.is_small(head):
            return head + f.read(), None
    return None, _source(store, oid)


def read_table(store: ChunkStore, oid: bytes) -> pa.Table:
    """Read an Arrow table object (memory-mapped where the store is local); a small layer as its Arrow table."""
    try:
        data, source = _fetch(store, oid)
        if data is not None:
            return to_table(smalllayer.decode(oid, data))
        return pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise Corruption(f"Table object {oid.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None


def load_layer(store: ChunkStore, layer: Layer) -> "SmallLayer | pa.Table":
    """A layer as it is stored: a small one decoded without pyarrow, any other as its Arrow table."""
    small = _small.get(store, layer.id)
    if small is None:
        cached = _layers.get(store, layer.id)
        if cached is not None and cached.num_rows == layer.rows:
            return cached
        try:
            data, source = _fetch(store, layer.id)
        except OSError as e:
            raise Corruption(f"File index {layer.id.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None
        if data is None:
            return _read_arrow_layer(store, layer, source)
        small = smalllayer.decode(layer.id, data)
        _small.remember(store, layer.id, small)
    if small.num_rows != layer.rows:
        raise Corruption(f"File index {layer.id.hex()} is damaged.", hint="Run `dpl fsck`.")
    return small


def read_layer(store: ChunkStore, layer: Layer) -> pa.Table:
    cached = _layers.get(store, layer.id)
    if cached is not None and cached.num_rows == layer.rows:
        return cached
    loaded = load_layer(store, layer)
    if isinstance(loaded, SmallLayer):
        loaded = to_table(loaded)
        _layers.remember(store, layer.id, loaded)
    return loaded


def _read_arrow_layer(store: ChunkStore, layer: Layer, source) -> pa.Table:
    try:
        table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise Corruption(f"File index {layer.id.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None
    if table.num_rows != layer.rows or not table.schema.equals(_schema()):
        raise Corruption(f"File index {layer.id.hex()} is damaged.", hint="Run `dpl fsck`.")
    _layers.remember(store, layer.id, table, mapped=True)  # a big one is a view of its mapped file
    return table


_layers = LayerCache(MMAP_FROM)
_small = LayerCache(MMAP_FROM)  # decoded small layers (their Arrow tables, once made, go to _layers)


def merge(tables: list[pa.Table], *, keep_tombstones: bool = False) -> pa.Table:
    """Combine layers (oldest first) into one sorted table; newest wins.

    Layers are folded oldest first.  A newer layer that is small next to what
    it lands on is laid over it by binary search and zero-copy slices, so the
    usual shape (one big layer plus a few small changes) costs O(k log n),
    not a sort of every row; two layers of similar size are merged by one
    vectorised sort.  `keep_tombstones` keeps the deletion rows (needed while
    older layers remain below the merged ones).
    """
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return _empty()
    merged = tables[0]
    if not keep_tombstones and pc.any(merged["deleted"]).as_py():
        merged = pc.filter(merged, pc.invert(merged["deleted"]))
    for newer in tables[1:]:
        if _few(newer.num_rows, merged.num_rows):
            merged = _overlay(merged, newer, keep_tombstones)
        else:
            merged = _merge_sorted(merged, newer, keep_tombstones)
    return merged


def _few(k: int, n: int) -> bool:
    """Whether k binary searches in n sorted rows beat one scan of them."""
    return k * max(n.bit_length(), 1) * 100 < n


class SortedPaths:
    """Binary search over a sorted string column, one scalar read per probe,
    or over the column made a list (`listed`: ~2 µs a probe becomes ~1 µs
    a whole search, for a column searched many times).

    Arrow orders strings by their UTF-8 bytes, which is also the order of
    Python's str comparison (UTF-8 preserves code point order).
    """

    def __init__(self, column, *, listed: bool = False):
        self.chunks = [c for c in (column.chunks if isinstance(column, pa.ChunkedArray) else [column]) if len(c)]
        self.starts = [0]
        for c in self.chunks:
            self.starts.append(self.starts[-1] + len(c))
        self.n = self.starts[-1]
        self.values = column.to_pylist() if listed else None

    def __getitem__(self, i: int) -> str:
        if self.values is not None:
            return self.values[i]
        c = bisect.bisect_right(self.starts, i) - 1
        return self.chunks[c][i - self.starts[c]].as_py()

    def lower(self, key: str, lo: int = 0) -> int:
        """The first index at or after `lo` whose value is >= key."""
        if self.values is not None:
            return bisect.bisect_left(self.values, key, lo)
        hi = self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, key: str) -> int | None:
        i = self.lower(key)
        return i if i < self.n and self[i] == key else None


class RowView:
    """An Arrow layer seen as a small layer (`find`, `range`, `has_prefix`),
    by binary search: a commit of a few files on a big base is checked by
    smalllayer's plain-Python collision and size rules, which then read a
    few rows of the base instead of calling Arrow a dozen times a commit."""

    __slots__ = ("table", "index")

    # A base layer of up to this many rows is searched as a list of its paths
    # (~7 MB at the most), made once: a commit looks up ~100 paths' worth of
    # probes in it (each path and its directories, in every layer).
    LISTED_ROWS = 100_000

    def __init__(self, table: pa.Table):
        self.table, self.index = table, SortedPaths(table["path"], listed=table.num_rows <= self.LISTED_ROWS)

    def find(self, path: str) -> smalllayer.Row | None:
        i = self.index.find(path)
        return None if i is None else self._rows(i, i + 1)[0]

    def range(self, lo: str, hi: str) -> list[smalllayer.Row]:
        """The rows with lo <= path < hi."""
        i = self.index.lower(lo)
        return self._rows(i, self.index.lower(hi, i))

    def has_prefix(self, prefix: str) -> bool:
        i = self.index.lower(prefix)
        return i < self.index.n and self.index[i].startswith(prefix)

    def _rows(self, start: int, end: int) -> list[smalllayer.Row]:
        return [smalllayer.Row(r["path"], r["size"], r["hash"], tuple((c["chunk"], c["offset"], c["length"]) for c in r["refs"]),
                               r["deleted"], r["datum"]) for r in self.table.slice(start, end - start).to_pylist()]


_views: dict[bytes, RowView] = {}  # by layer id (a layer's rows never change); newest last
_views_lock = threading.Lock()


def row_view(layer: Layer, table: pa.Table) -> RowView:
    """The RowView of `layer` (read as `table`), made once while it is among
    the last few asked for: by id, so that a store whose layers are not
    cached (S3 with no read cache) lists a base's paths once, not a commit.

    Only a view that lists its paths is kept: a bigger one costs nothing to
    make again, and keeping it would keep its table (on S3, in memory) alive.
    """
    if table.num_rows > RowView.LISTED_ROWS:
        return RowView(table)
    with _views_lock:
        view = _views.pop(layer.id, None)
    if view is None:
        view = RowView(table)
    with _views_lock:
        _views[layer.id] = view
        while len(_views) > 4:
            del _views[next(iter(_views))]
    return view


def _after_dir(directory: str) -> str:
    """The smallest string above every path under `directory` (which ends in /)."""
    return directory[:-1] + "0"  # "0" is the byte right after "/"


def _overlay(older: pa.Table, newer: pa.Table, keep_tombstones: bool) -> pa.Table:
    """`newer` (few rows) laid over `older`: zero-copy slices of `older`
    between the newer rows, skipping the rows they replace or delete."""
    index = SortedPaths(older["path"])
    pieces = []
    pos = 0  # rows of `older` before this are placed (or dropped)
    run = None  # start of the current run of newer rows to emit
    paths = newer["path"].to_pylist()
    deleted = newer["deleted"].to_pylist()
    for j, (path, dead) in enumerate(zip(paths, deleted)):
        i = index.lower(path, pos)
        if i > pos:
            if run is not None:
                pieces.append(newer.slice(run, j - run))
                run = None
            pieces.append(older.slice(pos, i - pos))
            pos = i
        if pos < index.n and index[pos] == path:
            pos += 1  # replaced (or deleted) by the newer row
        if dead and path.endswith("/"):
            pos = max(pos, index.lower(_after_dir(path), pos))  # the whole directory goes
        if dead and not keep_tombstones:
            if run is not None:
                pieces.append(newer.slice(run, j - run))
                run = None
        elif run is None:
            run = j
    if run is not None:
        pieces.append(newer.slice(run))
    if pos < index.n:
        pieces.append(older.slice(pos))
    return pa.concat_tables(pieces) if pieces else _empty()


def _merge_sorted(older: pa.Table, newer: pa.Table, keep_tombstones: bool) -> pa.Table:
    """Two layers of similar size: drop what `newer` shadows, then one sort."""
    keep = pc.invert(pc.is_in(older["path"], value_set=newer["path"].combine_chunks()))
    for d in _dir_tombstones(newer)["path"].to_pylist():
        keep = pc.and_(keep, pc.invert(pc.starts_with(older["path"], d)))
    if not keep_tombstones and pc.any(newer["deleted"]).as_py():
        newer = pc.filter(newer, pc.invert(newer["deleted"]))
    merged = pa.concat_tables([pc.filter(older, keep), newer])
    return pc.take(merged, pc.sort_indices(merged, [("path", "ascending")]))


def _dir_tombstones(table: pa.Table) -> pa.Table:
    """The rows of a layer that delete a whole directory."""
    if not pc.any(table["deleted"]).as_py():  # a bitmap scan: most layers delete nothing
        return table.slice(0, 0)
    dead = pc.filter(table, table["deleted"])
    return pc.filter(dead, pc.ends_with(dead["path"], "/"))


def _rows(table: pa.Table, paths: list[str]) -> pa.Table:
    """The rows of one layer at exactly these (sorted, unique) paths."""
    if _few(len(paths), table.num_rows):
        index = SortedPaths(table["path"])
        found = [i for i in map(index.find, paths) if i is not None]
        if len(found) <= 1:  # the usual lookup: a zero-copy slice, not a take of every column
            return table.slice(found[0] if found else 0, len(found))
        from . import arrowcols  # not pa.array: it imports pandas

        return pc.take(table, arrowcols.int64s(found))
    from . import arrowcols

    return pc.filter(table, pc.is_in(table["path"], value_set=arrowcols.strings(paths)))


def _range(table: pa.Table, lo_key: str, hi_key: str) -> pa.Table:
    """The rows of one layer with lo_key <= path < hi_key."""
    index = SortedPaths(table["path"])
    lo = index.lower(lo_key)
    return table.slice(lo, index.lower(hi_key, lo) - lo)


def _with_tombstones(table: pa.Table, subset: pa.Table) -> pa.Table:
    """A subset of a layer plus the layer's directory tombstones, sorted:
    those still delete older rows of the subset's paths."""
    dirs = _dir_tombstones(table)
    if not dirs.num_rows:
        return subset
    both = pa.concat_tables([dirs, subset])
    return _first_of_each_path(pc.take(both, pc.sort_indices(both, [("path", "ascending")])))


def lookup(tables: list[pa.Table], paths) -> pa.Table:
    """The current rows (tombstones removed) for just these paths."""
    wanted = sorted(set(paths))
    return merge([_with_tombstones(t, _rows(t, wanted)) for t in tables])


def under(tables: list[pa.Table], prefix: str) -> pa.Table:
    """The current files at or beneath a directory prefix (`/` for all)."""
    if prefix == "/":
        return merge(tables)
    directory = prefix.rstrip("/") + "/"
    subsets = []
    for t in tables:
        subset = _range(t, directory, _after_dir(directory))
        if not prefix.endswith("/"):
            subset = pa.concat_tables([_rows(t, [prefix]), subset])  # the file itself sorts just before
        subsets.append(_with_tombstones(t, subset))
    return merge(subsets)


def path_collision(base: list[pa.Table], delta: list[pa.Table]) -> tuple[str, str] | None:
    """A path that would be a file and a directory at once if `delta` landed
    on `base`, as (the file, a path beneath it); None when there is none.

    Costs what the delta touches: the new files' parent directories are looked
    up in `base`, and the new files are probed in `base` by binary search (a
    delta as big as the base is checked with one vectorised pass instead)."""
    added = merge(delta)
    if not added.num_rows:
        return None
    files = added["path"].combine_chunks()
    both = merge(delta, keep_tombstones=True)
    gone = both.filter(both["deleted"])["path"].to_pylist()
    gone_dirs = tuple(p for p in gone if p.endswith("/"))
    gone = set(gone)

    def still_there(path: str) -> bool:
        return path not in gone and not path.startswith(gone_dirs)

    def beneath(directory: str) -> str:
        return files[SortedPaths(files).lower(directory + "/")].as_py()

    # 1. A new file below a path that is (or stays) a file.
    dirs = _ancestors(files)
    clash = dirs.filter(pc.is_in(dirs, value_set=files))
    if len(clash):
        return clash[0].as_py(), beneath(clash[0].as_py())
    for path in lookup(base, dirs.to_pylist())["path"].to_pylist():
        if still_there(path):
            return path, beneath(path)
    # 2. A new file where the base has a directory.
    base = [t for t in base if t.num_rows]
    if not base:
        return None
    # Probing costs ~1 us a step; the alternative merges the whole base (a
    # dozen Arrow calls of ~20 us each, whatever its size): so a few new
    # files are probed even in a small base.
    if _few(len(files), sum(t.num_rows for t in base) + 20_000):
        probes = [SortedPaths(t["path"]) for t in base]
        candidates = [f for f in files.to_pylist() if any(_starts_at(s, f + "/") for s in probes)]
    else:
        candidates = files.filter(pc.is_in(files, value_set=_ancestors(merge(base)["path"].combine_chunks()))).to_pylist()
    for f in candidates:
        below = [p for p in under(base, f + "/")["path"].to_pylist() if still_there(p)]
        if below:
            return f, below[0]
    return None


def _starts_at(index: SortedPaths, prefix: str) -> bool:
    """Whether some value of the sorted column starts with `prefix`."""
    i = index.lower(prefix)
    return i < index.n and index[i].startswith(prefix)


def _ancestors(paths: pa.Array) -> pa.Array:
    """Every directory above these paths, except `/`, once each (nearest
    level first)."""
    from . import arrowcols  # not pa.array: asking whether a list is a DataFrame imports pandas (~0.3 s)

    if len(paths) <= 64:  # a regex pass per level costs more than Python for a few paths
        levels: dict[str, None] = {}
        level = paths.to_pylist()
        while level:
            level = [p for p in dict.fromkeys(p.rpartition("/")[0] for p in level) if p]  # "/a/b" -> "/a"; "/a" -> ""
            levels.update(dict.fromkeys(level))
        return arrowcols.strings(list(levels))
    found = []
    level = paths
    while len(level):
        level = pc.unique(pc.replace_substring_regex(level, r"/[^/]*$", ""))  # "/a/b" -> "/a"; "/a" -> ""
        level = level.filter(pc.not_equal(level, ""))
        found.append(level)
    return pc.unique(pa.concat_arrays(found)) if found else arrowcols.strings([])


def plan_compaction(layers: list[Layer], *, fold_to: int = MAX_LAYERS) -> tuple[int, int] | None:
    """Which run of trailing layers to merge, as a slice (start, end), if any.

    Merge the newest layers while the older neighbour is no more than twice
    as big (a size-tiered LSM rule: each row is rewritten O(log n) times), and
    always keep the count at or below MAX_LAYERS, past it by merging enough
    of the newest layers to leave at most `fold_to`; a run of small layers
    waits until there are more than MAX_LAYERS // 2 layers.
    """
    if len(layers) < 2:
        return None

    def tiered(start: int) -> int:
        # Take in older neighbours while each is no more than twice the run.
        tail_rows = sum(l.rows for l in layers[start:])
        while start > 0 and layers[start - 1].rows <= 2 * tail_rows:
            start -= 1
            tail_rows += layers[start].rows
        return start

    start = tiered(len(layers) - 1)
    if len(layers) > MAX_LAYERS:
        # A forced fold takes in older neighbours by the tiered rule too.
        # Without that, the folded run sat above a smaller layer, which no
        # later run of new layers could reach, and each fold rewrote it
        # again: after 20,000 1-row commits on one branch, each commit
        # rewrote ~230 rows; taking them in, ~9.
        start = tiered(min(start, fold_to - 1))
    if start == len(layers) - 1:
        return None
    if len(layers) <= MAX_LAYERS // 2 and sum(l.rows for l in layers[start:]) <= smalllayer.SMALL_ROWS:
        # A few small layers cost a read next to nothing to merge, and
        # merging them costs a write a new object and its flush: wait until
        # there are more of them (a 1-file commit then flushes ~4 files, not 6).
        return None
    return start, len(layers)


def compact(store: ChunkStore, layers: list[Layer], *, fold_to: int = MAX_LAYERS) -> list[Layer]:
    plan = plan_compaction(layers, fold_to=fold_to)
    if plan is None:
        return layers
    start, end = plan
    if sum(l.rows for l in layers[start:end]) <= smalllayer.SMALL_ROWS:
        loaded = [load_layer(store, l) for l in layers[start:end]]
        if all(isinstance(t, SmallLayer) for t in loaded):  # a few rows merged without pyarrow
            merged = smalllayer.merge_stored(loaded, keep_tombstones=start > 0)
            return layers[:start] + ([write_small(store, merged)] if merged.num_rows else [])
    tables = [read_layer(store, l) for l in layers[start:end]]
    # Tombstones matter only while older layers remain below the merged one.
    merged = merge(tables, keep_tombstones=start > 0)
    if merged.num_rows == 0:
        return layers[:start]
    return layers[:start] + [write_layer(store, merged.combine_chunks())]
