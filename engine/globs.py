"""Glob patterns over a commit's files, as Pachyderm uses them to cut datums.

A glob is matched against every file *and directory* path of a commit; each
match is one unit of work, holding the matched file or everything beneath the
matched directory.  `/` is the whole commit as one unit, `/*` each top-level
entry, `/*/*` each second-level entry, `/*.csv` each top-level CSV file.
Parentheses are capture groups (`/(*)-(*).csv`) that `join_on` and
`group_by` refer to as `$1`, `$2`.  The syntax is ohmyglob's, as Pachyderm
reads it (`ohmyglob`): alternation `/(a|c)-(*).csv`, `{a,b}`, and the
extglobs `@( )`, `!( )`, `+( )`, `*( )`, `?( )`.

Matching is columnar: for a pattern whose matches have a fixed depth d, each file's ancestor at
depth d is computed with Arrow kernels, the distinct ancestors are matched
once, and the matches come back as one table plus group offsets, so a
100,000-entry input costs a few vectorised passes, not 100,000 tables.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import ohmyglob
from .errors import InvalidSpec


@dataclass(frozen=True)
class Glob:
    pattern: str  # cleaned as Pachyderm cleans it: leading '/', no trailing '/'
    regex: str  # anchored, for Python's re (backtracking, like ohmyglob's regexp2)
    re2: str | None  # the same for Arrow's RE2, None when it needs lookahead (`!(...)`)
    groups: int
    depth: int | None  # path components a match has; None when it varies (`**`, `{a,a/b}`)

    @property
    def is_root(self) -> bool:
        return self.pattern == "/"


def clean(pattern: str) -> str:
    """Pachyderm's pfsfile.CleanPath: `a/b/` and `/a//b` are `/a/b`, `` is `/`."""
    p = posixpath.normpath(pattern)
    return "/" if p in (".", "/", "//") else "/" + p.strip("/")


def compile_glob(pattern: str) -> Glob:
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidSpec("an empty glob matches nothing.", hint="Use / for the whole repo or /* for each top-level entry.")
    if "\x00" in pattern:
        raise InvalidSpec("a glob may not contain a NUL character.")
    p = clean(pattern.strip())
    if p == "/":
        return Glob("/", r"\A/\Z", "^/$", 0, 0)
    try:
        t = ohmyglob.translate(p, "/")
    except ValueError as e:
        raise InvalidSpec(f"{pattern!r} is not a valid glob: {e}.", hint="Globs are read as Pachyderm reads them (ohmyglob).") from None
    depth = next(iter(t.separators)) if t.separators is not None and len(t.separators) == 1 else None
    return Glob(p, rf"\A(?:{t.body})\Z", None if t.lookahead else f"^(?:{t.body})$", t.groups, depth)


@dataclass
class Matches:
    """The units a glob cut from one commit, in columnar form.

    Unit i is `files[starts[i]:starts[i+1]]`, matched as `keys[i]`, with the
    glob's capture groups `captures[i]`.
    """

    files: pa.Table
    starts: np.ndarray
    keys: list[str]
    captures: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.keys)

    def unit(self, i: int) -> pa.Table:
        return self.files.slice(int(self.starts[i]), int(self.starts[i + 1] - self.starts[i]))

    def __iter__(self):
        for i, key in enumerate(self.keys):
            yield Unit(key, self.unit(i), self.captures[i])


@dataclass
class Unit:
    path: str
    files: pa.Table
    captures: tuple[str, ...]


def match(table: pa.Table, pattern: str | Glob) -> Matches:
    """Cut `table` (a commit's sorted file table) into units by a glob."""
    g = pattern if isinstance(pattern, Glob) else compile_glob(pattern)
    if table.num_rows == 0:
        return Matches(table, np.zeros(1, np.int64), [], [])
    if g.is_root:
        return Matches(table, np.array([0, table.num_rows], np.int64), ["/"], [()])
    if g.depth is None:
        return _match_any_depth(table, g)
    # Each file's ancestor at the glob's depth, in two single-pass kernels.
    deep_enough = pc.greater_equal(pc.count_substring(table["path"], "/"), g.depth)
    table = table.filter(deep_enough)
    if table.num_rows == 0:
        return Matches(table, np.zeros(1, np.int64), [], [])
    ancestor = pc.replace_substring_regex(table["path"], pattern=f"^((?:/[^/]*){{{g.depth}}}).*$", replacement="\\1")
    distinct = pc.unique(ancestor)
    if g.re2 is not None:
        matched = distinct.filter(pc.match_substring_regex(distinct, g.re2))
    else:  # lookahead: Python's re, once per distinct entry
        rx = re.compile(g.regex)
        matched = distinct.filter(pa.array([rx.match(k) is not None for k in distinct.to_pylist()], pa.bool_()))
    keep = pc.is_in(ancestor, value_set=matched)
    table = table.filter(keep)
    ancestor = ancestor.filter(keep)
    n = table.num_rows
    if n == 0:
        return Matches(table, np.zeros(1, np.int64), [], [])
    anc = ancestor.combine_chunks() if isinstance(ancestor, pa.ChunkedArray) else ancestor
    boundary = np.ones(n, bool)
    if n > 1:
        boundary[1:] = pc.not_equal(anc.slice(1), anc.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    firsts = np.flatnonzero(boundary)
    keys = anc.take(pa.array(firsts)).to_pylist()
    starts = np.append(firsts, n).astype(np.int64)
    return Matches(table, starts, keys, _captures(g, keys))


def _captures(g: Glob, keys: list[str]) -> list[tuple[str, ...]]:
    if not g.groups:
        return [()] * len(keys)
    rx = re.compile(g.regex)
    return [tuple(c or "" for c in rx.match(k).groups()) for k in keys]


def _match_any_depth(table: pa.Table, g: Glob) -> Matches:
    """`**` patterns: every file and directory path is a candidate."""
    rx = re.compile(g.regex)
    paths = table["path"].to_pylist()
    candidates: dict[str, None] = {}
    for p in paths:
        parts = p.split("/")
        for d in range(2, len(parts) + 1):
            candidates.setdefault("/".join(parts[:d]))
    keys = sorted(c for c in candidates if rx.match(c))
    arr = np.array(paths, dtype=object)
    index, starts = [], [0]
    for k in keys:
        lo = int(np.searchsorted(arr, k))
        hi = int(np.searchsorted(arr, k + "0"))  # '0' sorts right after '/'
        rows = [i for i in range(lo, hi) if paths[i] == k or paths[i].startswith(k + "/")]
        index.extend(rows)
        starts.append(len(index))
    files = table.take(pa.array(index, pa.int64()))
    return Matches(files, np.array(starts, np.int64), keys, _captures(g, keys))
