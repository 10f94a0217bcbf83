"""Copying files by reference and describing one file: what `copy-file` and `inspect-file` compute.

A copy is the source's index rows under new paths: the rows keep their
chunk refs, so no byte is read or stored again (content addressing makes
sharing chunks between files, commits and repos safe).  `Files.copy_file`
lands the rows as one small layer.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .commits import pc_sum
from .reading import FileReader
from ..storage import index
from ..storage.errors import FileNotFound
from ..storage.paths import normalize_path


def copied_rows(reader: FileReader, repo: str, ref: str | None, path: str, dst_path: str | None) -> tuple[pa.Table, str, str]:
    """(the index rows of `path` under their new paths, the source path, the destination path).

    A file lands at `dst_path` (inside it when it ends in `/`, as `cp`
    does); a directory's contents land under `dst_path`.  No destination:
    the same path."""
    src = normalize_path(path, allow_root=True)
    rows = reader.files_under(repo, ref, src)
    if rows.num_rows == 0:
        raise FileNotFound(f"{repo}@{ref or 'master'}:{src} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
    single = rows.num_rows == 1 and rows["path"][0].as_py() == src
    dest = dst_path if dst_path not in (None, "") else src
    if single and dest.endswith("/"):
        dest += src.rsplit("/", 1)[-1]
    dest = normalize_path(dest, allow_root=True)
    if single:
        paths = [dest]
    else:
        base = "" if src == "/" else src
        paths = [("" if dest == "/" else dest) + p[len(base):] for p in rows["path"].to_pylist()]
    return index.make_table(paths, rows["size"].to_pylist(), rows["hash"].to_pylist(), rows["refs"].combine_chunks()), src, dest


def describe(reader: FileReader, repo: str, ref: str | None, path: str) -> dict:
    """One file (or directory) of a commit: its path, type, size, hash and the commit it was read from."""
    commit, table = reader.file_table(repo, ref)
    path = normalize_path(path, allow_root=True)
    rows = table.filter(pc.equal(table["path"], path)) if path != "/" else table.slice(0, 0)
    info = {"repo": repo, "commit": commit.id, "branch": commit.branch, "path": path}
    if rows.num_rows:
        row = rows.to_pylist()[0]
        return {**info, "type": "file", "size": row["size"], "hash": row["hash"].hex(),
                "chunks": len(row["refs"]), "committed": commit.finished}
    beneath = index.under([table], path)
    if path != "/" and beneath.num_rows == 0:
        raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
    return {**info, "type": "dir", "size": pc_sum(beneath["size"]), "files": beneath.num_rows,
            "hash": None, "committed": commit.finished}
