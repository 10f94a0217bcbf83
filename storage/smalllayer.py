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
    """A decoded small layer: its rows sorted by path, and the paths alone for bisecting."""

    __slots__ = ("rows", "paths")

    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.paths = [r.path for r in rows]

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def find(self, path: str) -> Row | None:
        i = bisect.bisect_left(self.paths, path)
        return self.rows[i] if i < len(self.paths) and self.paths[i] == path else None

    def range(self, lo: str, hi: str) -> list[Row]:
        """The rows with lo <= path < hi."""
        i = bisect.bisect_left(self.paths, lo)
        return self.rows[i : bisect.bisect_left(self.paths, hi, i)]

    def has_prefix(self, prefix: str) -> bool:
        """Whether some row's path starts with `prefix`."""
        i = bisect.bisect_left(self.paths, prefix)
        return i < len(self.paths) and self.paths[i].startswith(prefix)

    def dir_tombstones(self) -> list[str]:
        return [r.path for r in self.rows if r.deleted and r.path.endswith("/")]


def is_small(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def encode(rows: list[Row]) -> bytes:
    """A layer's bytes; `rows` sorted by path, each path once."""
    body = [[r.path, r.size, r.hash.hex(), [[c.hex(), o, n] for c, o, n in r.refs], bool(r.deleted),
             r.datum.hex() if r.datum is not None else None] for r in rows]
    # ASCII JSON: a path is any str (a lone surrogate included) and comes back the same.
    return MAGIC + json.dumps(body, separators=(",", ":")).encode("ascii")


def decode(oid: bytes, data: bytes) -> SmallLayer:
    """The layer stored as `data` under `oid`; Corruption if the bytes are not what was stored."""
    if object_id(data) != oid:
        raise Corruption(f"File index {oid.hex()} is damaged (its bytes do not match its id).", hint="Run `dpl fsck`.")
    try:
        body = json.loads(data[len(MAGIC):])
        rows = [Row(p, int(s), bytes.fromhex(h), tuple((bytes.fromhex(c), int(o), int(n)) for c, o, n in refs),
                    bool(d), bytes.fromhex(dt) if dt is not None else None) for p, s, h, refs, d, dt in body]
    except (ValueError, TypeError) as e:
        raise Corruption(f"File index {oid.hex()} cannot be read ({e}).", hint="Run `dpl fsck`.") from None
    if any(not isinstance(r.path, str) for r in rows) or any(a.path >= b.path for a, b in zip(rows, rows[1:])):
        raise Corruption(f"File index {oid.hex()} is damaged (its paths are out of order).", hint="Run `dpl fsck`.")
    return SmallLayer(rows)


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
    current: dict[str, Row] = {}
    for layer in layers:
        dirs = tuple(layer.dir_tombstones())
        if dirs:
            for p in [p for p in current if p.startswith(dirs)]:
                del current[p]
        for r in layer.rows:
            current[r.path] = r
    return [current[p] for p in sorted(current) if keep_tombstones or not current[p].deleted]


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
