"""File tables as listings and diffs: Arrow functions over the sorted rows of a commit.

A commit's file table is sorted by path, so a directory is a run of adjacent
rows; these functions work on whole columns (no Python loop per file), which
keeps `list-file` and `diff-file` fast on a hundred thousand files.  A page
of a directory (`dir_page`, for the console) seeks by binary search instead,
and reads only the rows of its own entries; so does the listing of a
directory of few entries (`dir_entries`).  Arrow's compute functions come
from storage/arrowcompute.py: a CLI listing never imports pyarrow.compute.
"""

from __future__ import annotations

import bisect

import pyarrow as pa

from ..storage import arrowcols, index
from ..storage import arrowcompute as pc  # not pyarrow.compute: its import costs more than a listing

ENTRY_SCHEMA = pa.schema([("path", pa.string()), ("type", pa.string()), ("size", pa.int64()), ("hash", pa.string())])


def entries(table: pa.Table) -> pa.Table:
    """Files of a file table as listing entries (path, type, size, hex hash)."""
    return pa.table(
        {
            "path": table["path"],
            "type": arrowcols.repeated("file", table.num_rows),
            "size": table["size"],
            "hash": hex_column(table["hash"]),
        }
    )


def hex_column(hashes) -> pa.Array:
    """Binary hashes as hex strings (nulls stay null), without a Python loop."""
    import binascii

    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    n, width = len(hashes), hashes.type.byte_width
    if n == 0:
        return arrowcols.strings([])
    data = hashes.buffers()[1]
    text = binascii.hexlify(memoryview(data)[hashes.offset * width : (hashes.offset + n) * width])
    strings = arrowcols.fixed_width_strings(text, 2 * width, n)
    if hashes.null_count:
        strings = pc.if_else(pc.is_valid(hashes), strings, pa.nulls(1, pa.string())[0])
    return strings


def dir_page(sub: pa.Table, prefix: str, after: str | None, limit: int) -> tuple[pa.Table, str | None]:
    """Up to `limit` entries of the directory `prefix` (ends in /) after the entry keyed `after`,
    and the key of the last one when more follow (else None).

    `sub` is every file under `prefix`, sorted by path.  A file is one row; a
    subdirectory is the run of rows between "prefix/name/" and "prefix/name0"
    ("0" is the byte after "/"), skipped with one binary search, so a page
    reads about `limit` rows whatever the directory holds.  Entries come in
    path order with a directory keyed "name/" (git's tree order), which is
    also what makes the key of a page's last entry a place to resume from.
    """
    paths, n = sub["path"], sub.num_rows
    pos = 0 if after is None else (_lower(paths, after[:-1] + "0") if after.endswith("/") else _upper(paths, after))
    found: list[tuple[str, int, int]] = []  # (key, first row, end row)
    batch = 8  # rows read at once, doubled while they are all files: a run of subdirectories reads few
    while pos < n and len(found) < limit:
        step = pos
        for j, path in enumerate(paths.slice(pos, min(batch, limit - len(found))).to_pylist()):
            name, slash, _ = path[len(prefix):].partition("/")
            if slash:
                end = _lower(paths, prefix + name + "0", pos + j)
                found.append((prefix + name + "/", pos + j, end))
                step = end
                break
            found.append((path, pos + j, pos + j + 1))
            step = pos + j + 1
        else:
            batch *= 2
        pos = step
    files = [start for key, start, _ in found if not key.endswith("/")]
    hashes = dict(zip(files, hex_column(pc.take(sub["hash"], arrowcols.int64s(files))).to_pylist())) if files else {}
    sizes = sub["size"]
    table = pa.table({
        "path": pa.array([key.rstrip("/") for key, _, _ in found], pa.string()),
        "type": pa.array(["dir" if key.endswith("/") else "file" for key, _, _ in found], pa.string()),
        "size": pa.array([pc.sum(sizes.slice(start, end - start)).as_py() if key.endswith("/") else sizes[start].as_py()
                          for key, start, end in found], pa.int64()),
        "hash": pa.array([hashes.get(start) for _, start, _ in found], pa.string()),
    }, schema=ENTRY_SCHEMA)
    return table, (found[-1][0] if found and pos < n else None)


def dir_entries(sub: pa.Table, prefix: str) -> pa.Table:
    """Every entry of the directory `prefix` (ends in /), sorted by name:
    a file's path, size and hash; a subdirectory's path and the sum of its
    files' sizes.  `sub` is every file under `prefix`, sorted by path.

    A directory of few entries is walked as `dir_page` walks it, each
    subdirectory skipped by a binary search, so it costs its entries, not
    the files beneath them (a tree's root: a hundred entries over 100,000
    files).  Past a few per 300 rows, and where a name is both a file and a
    directory (stores written before dpl refused that), every row is
    grouped by its first name instead (`group_runs`), which costs the rows.
    """
    page, more = dir_page(sub, prefix, None, max(64, sub.num_rows // 300))
    if more is None:
        # Pages come in git's tree order ("a.txt" before the directory "a/"); a listing is by name.
        paths = page["path"].to_pylist()
        order = sorted(range(len(paths)), key=paths.__getitem__)
        if all(paths[a] != paths[b] for a, b in zip(order, order[1:])):
            return page if order == list(range(len(order))) else pc.take(page, arrowcols.int64s(order))
    rest = pc.utf8_slice_codeunits(sub["path"], len(prefix))
    first = pc.list_element(pc.split_pattern(rest, "/", max_splits=1), arrowcols.int64(0))
    is_dir = pc.invert(pc.equal(first, rest))
    grouped = group_runs(first, sub["size"], is_dir)
    names = pc.binary_join_element_wise(arrowcols.string(prefix), grouped["name"], arrowcols.string(""))
    files = pc.filter(sub, pc.invert(is_dir))
    hashes = pc.take(files["hash"], pc.index_in(names, value_set=files["path"].combine_chunks()))
    return pa.table(
        {
            "path": names,
            "type": pc.if_else(grouped["dir_max"], arrowcols.string("dir"), arrowcols.string("file")),
            "size": grouped["size_sum"],
            "hash": hex_column(hashes),
        }
    )


def _lower(column, key: str, lo: int = 0) -> int:
    """The first row at or after `lo` whose value is >= key (the column is sorted)."""
    return bisect.bisect_left(column, key, lo, key=_py)


def _upper(column, key: str, lo: int = 0) -> int:
    """The first row at or after `lo` whose value is > key."""
    return bisect.bisect_right(column, key, lo, key=_py)


def _py(scalar):
    # Arrow orders strings by their UTF-8 bytes, which is also the order of Python's str comparison.
    return scalar.as_py()


def group_runs(names, sizes, is_dir) -> pa.Table:
    """name, size_sum, dir_max per name, for rows sorted by path.

    Rows under one directory are adjacent, so groups are runs: found by
    comparing neighbours and summed by differences of a running total, with
    no hash aggregation (which would also import Arrow's query engine, a
    visible share of a CLI call).  A file and a directory of the same name
    can be split by a sibling that sorts between them ("a", "a!b", "a/c");
    then the runs repeat a name and a real group-by merges them.
    """
    n = len(names)
    if n == 0:
        return pa.table({"name": arrowcols.strings([]), "size_sum": arrowcols.int64s([]), "dir_max": arrowcols.bools([])})
    names = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    new_run = pa.concat_arrays([arrowcols.bools([True]), pc.not_equal(names.slice(1), names.slice(0, n - 1))])
    starts = pc.cast(pc.indices_nonzero(new_run), pa.int64())
    run_names = pc.take(names, starts)
    if not index.is_sorted_unique(run_names):
        grouped = (
            pa.table({"name": names, "size": sizes, "dir": is_dir})
            .group_by("name", use_threads=False)
            .aggregate([("size", "sum"), ("dir", "max")])
        )
        return pc.take(grouped, pc.sort_indices(grouped, [("name", "ascending")]))
    ends = pa.concat_arrays([pc.subtract(starts.slice(1), arrowcols.int64(1)), arrowcols.int64s([n - 1])])

    def run_sums(values):
        total = pc.cumulative_sum(values)
        before = pc.subtract(pc.take(total, starts), pc.take(values, starts))
        return pc.subtract(pc.take(total, ends), before)

    dirs = run_sums(pc.cast(is_dir, pa.int64()))
    return pa.table({"name": run_names, "size_sum": run_sums(sizes), "dir_max": pc.greater(dirs, arrowcols.int64(0))})


def diff_tables(old: pa.Table, new: pa.Table) -> pa.Table:
    """added / modified / deleted rows from `old` to `new`, sorted by path."""
    old_paths, new_paths = old["path"].combine_chunks(), new["path"].combine_chunks()
    paths = pc.unique(pa.concat_arrays([old_paths, new_paths]))
    at_old = pc.index_in(paths, value_set=old_paths)
    at_new = pc.index_in(paths, value_set=new_paths)
    old_hash, new_hash = pc.take(old["hash"], at_old), pc.take(new["hash"], at_new)
    added = pc.is_null(at_old)
    deleted = pc.is_null(at_new)
    modified = pc.and_(pc.and_(pc.invert(added), pc.invert(deleted)), pc.not_equal(old_hash, new_hash))
    # Typed scalars, not bare strs (whose inferred type would import dateutil).
    word, none = arrowcols.string, pa.nulls(1, pa.string())[0]
    change = pc.if_else(added, word("added"), pc.if_else(deleted, word("deleted"), pc.if_else(modified, word("modified"), none)))
    j = pa.table({"path": paths, "change": change, "old_size": pc.take(old["size"], at_old), "new_size": pc.take(new["size"], at_new)})
    j = pc.filter(j, pc.is_valid(change))
    return pc.take(j, pc.sort_indices(j, [("path", "ascending")]))
