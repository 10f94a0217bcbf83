"""Small file-index layers, written and read without pyarrow.

Most layers hold a handful of rows: the file or two of a put-file, a
delete, the merge of a few such commits.  Written as Arrow IPC files they
cost a command that touches nothing else ~0.15 s of importing pyarrow and
numpy, several times the rest of a 1-file `dpl put-file` (issue 12).  A
layer of at most `SMALL_ROWS` rows is therefore stored as `MAGIC` followed
by JSON, and landing, collision checks, file counts and compaction over
layers that are all small run here in plain Python.  storage/index.py reads
both formats (an Arrow IPC file starts with `ARROW1`, never with `MAGIC`),
turning a small layer into the same Arrow table for everything else, so
stores written before this format stay readable as they are.

A small layer is checked against its id (the xxh3-128 of its bytes) when
it is read: its bytes are few, and JSON, unlike Arrow's buffers, would not
always notice a damaged digit.
"""

from __future__ import annotations

import bisect
import json
from typing import NamedTuple

from .chunkstore import object_id
from .errors import Corruption

MAGIC = b"DPL-LAYER1\n"
# Up to this many rows a layer is written small.  Decoding or merging a few
# thousand rows in Python costs a few milliseconds, an Arrow import ~150 ms;
# past it the vectorised Arrow path wins.
SMALL_ROWS = 2048


class Row(NamedTuple):
    """One row of a layer, as the Arrow index's columns (refs: (chunk, offset, length) tuples)."""

    path: str
    size: int
    hash: bytes
    refs: tuple
    deleted: bool = False
    datum: bytes | None = None


class SmallLayer:
    """A small layer: its rows sorted by path, and the paths alone for bisecting.

    A layer read back keeps its stored entries (the JSON lists) and makes a
    `Row` of one only when asked: a writer landing on a head that another
    process compacted looks up a few paths in a layer of up to SMALL_ROWS
    rows, and compaction merges entries and writes them back as they are,
    so neither pays for turning every hex digest into bytes (~3 µs a row).
    """

    __slots__ = ("_rows", "_entries", "paths")

    def __init__(self, rows: list[Row] | None = None, *, entries: list[list] | None = None):
        self._rows = rows
        self._entries = entries
        self.paths = [r.path for r in rows] if rows is not None else [e[0] for e in entries]

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = [_row(e) for e in self._entries]
        return self._rows

    @property
    def entries(self) -> list[list]:
        """The rows as stored (see `encode`)."""
        if self._entries is None:
            self._entries = [_entry(r) for r in self._rows]
        return self._entries

    @property
    def num_rows(self) -> int:
        return len(self.paths)

    def _at(self, i: int) -> Row:
        return self._rows[i] if self._rows is not None else _row(self._entries[i])

    def find(self, path: str) -> Row | None:
        i = bisect.bisect_left(self.paths, path)
        return self._at(i) if i < len(self.paths) and self.paths[i] == path else None

    def range(self, lo: str, hi: str) -> list[Row]:
        """The rows with lo <= path < hi."""
        i = bisect.bisect_left(self.paths, lo)
        return [self._at(k) for k in range(i, bisect.bisect_left(self.paths, hi, i))]

    def has_prefix(self, prefix: str) -> bool:
        """Whether some row's path starts with `prefix`."""
        i = bisect.bisect_left(self.paths, prefix)
        return i < len(self.paths) and self.paths[i].startswith(prefix)

    def dir_tombstones(self) -> list[str]:
        rows = self._rows if self._rows is not None else self._entries
        return [r[0] for r in rows if r[4] and r[0].endswith("/")]  # (a Row's fields are in the entries' order)


def is_small(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def _entry(r: Row) -> list:
    return [r.path, r.size, r.hash.hex(), [[c.hex(), o, n] for c, o, n in r.refs], bool(r.deleted),
            r.datum.hex() if r.datum is not None else None]


def _row(e: list) -> Row:
    path, size, digest, refs, deleted, datum = e
    fromhex = bytes.fromhex
    return Row(path, size, fromhex(digest), tuple([(fromhex(c), o, n) for c, o, n in refs]), deleted,
               None if datum is None else fromhex(datum))


def encode(layer: SmallLayer) -> bytes:
    """A layer's bytes: its entries, sorted by path, each path once."""
    # ASCII JSON: a path is any str (a lone surrogate included) and comes back the same.
    return MAGIC + json.dumps(layer.entries, separators=(",", ":")).encode("ascii")


def decode(oid: bytes, data: bytes) -> SmallLayer:
    """The layer stored as `data` under `oid`; Corruption if the bytes are not what was stored.

    The id check is what catches damage; the shape is checked here once, and
    each entry's fields when it is made a Row.
    """
    if object_id(data) != oid:
        raise Corruption(f"File index {oid.hex()} is damaged (its bytes do not match its id).", hint="Run `dpl fsck`.")
    try:
        entries = json.loads(data[len(MAGIC):])
    except ValueError as e:
        raise Corruption(f"File index {oid.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None
    if type(entries) is not list or any(type(e) is not list or len(e) != 6 or type(e[0]) is not str for e in entries):
        raise Corruption(f"File index {oid.hex()} cannot be read (its entries are not rows).", hint="Run `dpl fsck`.")
    layer = SmallLayer(entries=entries)
    paths = layer.paths
    if any(a >= b for a, b in zip(paths, paths[1:])):
        raise Corruption(f"File index {oid.hex()} is damaged (its paths are out of order).", hint="Run `dpl fsck`.")
    return layer


def rows_of(paths, sizes, hashes, refs, deleted=None, datums=None) -> list[Row]:
    """Rows from columns, sorted by path; where a path repeats, the later row wins (as index.make_table)."""
    n = len(paths)
    rows: dict[str, Row] = {}
    for i in range(n):
        rows[paths[i]] = Row(paths[i], int(sizes[i]), bytes(hashes[i]), tuple(tuple(r) for r in refs[i]),
                             bool(deleted[i]) if deleted is not None else False,
                             datums[i] if datums is not None else None)
    return [rows[p] for p in sorted(rows)]


# ------------------------------------------------------- merging and lookups


def merge(layers: list[SmallLayer], *, keep_tombstones: bool = False) -> list[Row]:
    """Combine layers (oldest first) into sorted rows; newest wins (index.merge's rules)."""
    return _merge(layers, keep_tombstones, lambda layer: layer.rows)


def merge_stored(layers: list[SmallLayer], *, keep_tombstones: bool = False) -> SmallLayer:
    """`merge`, as a layer of the entries as stored (compaction writes them back unchanged)."""
    return SmallLayer(entries=_merge(layers, keep_tombstones, lambda layer: layer.entries))


def _merge(layers: list[SmallLayer], keep_tombstones: bool, items) -> list:
    current: dict[str, list | Row] = {}
    for layer in layers:
        dirs = tuple(layer.dir_tombstones())
        if dirs:
            for p in [p for p in current if p.startswith(dirs)]:
                del current[p]
        current.update(zip(layer.paths, items(layer)))
    return [current[p] for p in sorted(current) if keep_tombstones or not current[p][4]]  # [4]: deleted


def _after_dir(directory: str) -> str:
    return directory[:-1] + "0"  # "0" is the byte right after "/": above every path under `directory`


def _dirs_of(path: str) -> list[str]:
    """The directories (ending in /) a path is beneath, nearest first."""
    out = []
    while True:
        path = path.rpartition("/")[0]
        if not path:
            return out
        out.append(path + "/")


def lookup(layers: list[SmallLayer], path: str) -> Row | None:
    """The current row of one path (None if absent or deleted), newest layer first."""
    dirs = _dirs_of(path)
    for layer in reversed(layers):
        row = layer.find(path)
        if row is not None:
            return None if row.deleted else row
        if any((t := layer.find(d)) is not None and t.deleted for d in dirs):
            return None
    return None


def under(layers: list[SmallLayer], directory: str) -> list[Row]:
    """The current files beneath `directory` (which ends in /)."""
    covering = tuple(_dirs_of(directory.rstrip("/") + "/x"))  # the directory itself and each above it
    subsets = []
    for layer in layers:
        rows = layer.range(directory, _after_dir(directory))
        dead = [t for d in covering if (t := layer.find(d)) is not None and t.deleted and t.path != directory]
        subsets.append(SmallLayer(sorted(dead + rows)))
    return merge(subsets)


def _ancestors(files: list[str]) -> list[str]:
    """Every directory above these paths, except `/`, once each, nearest level first (as index._ancestors)."""
    levels: dict[str, None] = {}
    level = files
    while level:
        level = [p for p in dict.fromkeys(p.rpartition("/")[0] for p in level) if p]
        levels.update(dict.fromkeys(level))
    return list(levels)


def path_collision(base: list[SmallLayer], delta: list[SmallLayer]) -> tuple[str, str] | None:
    """index.path_collision over small layers: a path that would be a file
    and a directory at once, as (the file, a path beneath it), or None."""
    both = merge(delta, keep_tombstones=True)
    files = [r.path for r in both if not r.deleted]
    if not files:
        return None
    gone = {r.path for r in both if r.deleted}
    gone_dirs = tuple(p for p in gone if p.endswith("/"))

    def still_there(path: str) -> bool:
        return path not in gone and not path.startswith(gone_dirs)

    def beneath(directory: str) -> str:
        return files[bisect.bisect_left(files, directory + "/")]

    dirs = _ancestors(files)
    new = set(files)
    for d in dirs:
        if d in new:
            return d, beneath(d)
    for path in sorted(d for d in dirs if lookup(base, d) is not None):
        if still_there(path):
            return path, beneath(path)
    for f in files:
        if not any(layer.has_prefix(f + "/") for layer in base):
            continue  # the usual case, by one bisection a layer: nothing is beneath it
        below = [r.path for r in under(base, f + "/") if still_there(r.path)]
        if below:
            return f, below[0]
    return None


def stats_after(base_size: int, base_nfiles: int, base: list[SmallLayer] | None, delta: list[SmallLayer]) -> tuple[int, int]:
    """Size and file count of base + delta (base None: no parent), touching only the changed paths."""
    new = merge(delta)
    added_size, added_count = sum(r.size for r in new), len(new)
    if base is None:
        return added_size, added_count
    replaced: dict[str, int] = {}
    for layer in delta:
        for p in layer.paths:
            if p.endswith("/"):
                replaced.update((r.path, r.size) for r in under(base, p))
            elif (row := lookup(base, p)) is not None:
                replaced[p] = row.size
    return base_size - sum(replaced.values()) + added_size, base_nfiles - len(replaced) + added_count
