"""Console pages for data: a repo's branches and commits, its files at any
commit, one file with a preview, and the diff between two commits.

Previews read at most PREVIEW bytes of a file (the chunks before that are
the only ones read), so a big file's page costs what a small one's does.
"""

from __future__ import annotations

import csv
import json
from typing import Optional

from fastapi import APIRouter, Request

from .pages import PAGE, html_errors, page_of, render, store
from .session import require_read
from ..wire import decode_cursor, encode_cursor, plain

router = APIRouter(include_in_schema=False)

PREVIEW = 256 << 10
PARQUET_MAX = 64 << 20  # a Parquet preview reads the footer and a first row group, so the whole file here
_IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
           ".svg": "image/svg+xml"}


@router.get("/repos/{repo}")
@html_errors
def repo(request: Request, repo: str, branch: Optional[str] = None, cursor: Optional[str] = None):
    s = store(request)
    require_read(request, repo)
    info = plain(s.inspect_repo(repo))
    commits, next_cursor = page_of(s.list_commits(repo, branch), cursor)
    if request.headers.get("hx-request") and cursor:
        return render(request, "commit_rows.html", info=info, commits=commits, next_cursor=next_cursor, branch=branch)
    branches = plain(s.list_branches(repo))
    return render(request, "repo.html", info=info, branches=branches, commits=commits, next_cursor=next_cursor, branch=branch,
                  pipeline=info.get("kind") == "pipeline")


@router.get("/repos/{repo}/tree")
@html_errors
def tree(request: Request, repo: str, ref: Optional[str] = None, path: str = "/", cursor: Optional[str] = None):
    s = store(request)
    require_read(request, repo)
    commit = plain(s.resolve_commit(repo, ref))
    # Listed at the resolved commit id, so that every page reads the same commit; a page
    # seeks to its first entry and stops after its last, so a page of a 100,000-file
    # directory reads 50 rows, not the directory (the cursor is the last entry's key).
    after = decode_cursor(cursor).get("after")
    table, last = s.files.reader.list_page(repo, commit["id"], path, after=after if isinstance(after, str) else None,
                                           limit=PAGE)
    rows, next_cursor = plain(table), (encode_cursor({"after": last}) if last else None)
    context = dict(repo=repo, ref=ref or "master", commit=commit, path=path, rows=rows, next_cursor=next_cursor,
                   parents=_parents(path))
    if request.headers.get("hx-request") and cursor:
        return render(request, "file_rows.html", **context)
    return render(request, "tree.html", **context)


def _parents(path: str) -> list[tuple[str, str]]:
    parts = [p for p in path.split("/") if p]
    return [("/", "/")] + [(p, "/" + "/".join(parts[: i + 1])) for i, p in enumerate(parts)]


@router.get("/repos/{repo}/file")
@html_errors
def file(request: Request, repo: str, path: str, ref: Optional[str] = None):
    s = store(request)
    require_read(request, repo)
    row = s.file_row(repo, ref, path)
    commit = plain(s.resolve_commit(repo, ref))
    info = {"path": row["path"], "size": row["size"], "hash": row["hash"].hex()}
    kind, preview = _preview(s, row)
    return render(request, "file.html", repo=repo, ref=ref or "master", commit=commit, file=info, kind=kind, preview=preview,
                  parents=_parents(row["path"].rsplit("/", 1)[0] or "/"))


def _head(s, row, n: int) -> bytes:
    out, left = [], n
    for ref in row["refs"]:
        if left <= 0:
            break
        view = s.files.chunk_slice(ref)  # the Files component's reader, as the API's download uses
        out.append(bytes(view[:left]))
        left -= len(out[-1])
    return b"".join(out)


def _preview(s, row):
    name = row["path"].lower()
    ext = name[name.rfind("."):] if "." in name.rsplit("/", 1)[-1] else ""
    if ext in _IMAGES:
        return "image", None
    if ext == ".parquet":
        if row["size"] > PARQUET_MAX:
            return "none", f"Parquet files over {PARQUET_MAX >> 20} MiB are not previewed; download it."
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(pa.BufferReader(_head(s, row, row["size"])))
        first = parquet.read_row_group(0).slice(0, 20) if parquet.num_row_groups else None
        return "table", {"columns": parquet.schema_arrow.names, "rows": [list(r.values()) for r in (first.to_pylist() if first else [])],
                         "total": parquet.metadata.num_rows}
    data = _head(s, row, PREVIEW)
    cut = row["size"] > len(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if not cut or e.start < len(data) - 4:  # not merely a character split at the preview's end
            return "none", "A binary file: download it to look inside."
        text = data[: e.start].decode("utf-8")
    if ext in (".csv", ".tsv"):
        lines = text.splitlines()[:51] if not cut else text.splitlines()[:-1][:51]
        table = list(csv.reader(lines, delimiter="\t" if ext == ".tsv" else ","))
        if table:
            return "table", {"columns": table[0], "rows": table[1:], "total": None}
    if ext == ".json" and not cut:
        try:
            return "text", json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return "text", text + ("\n… (preview ends here; download the whole file)" if cut else "")


@router.get("/repos/{repo}/diff")
@html_errors
def diff(request: Request, repo: str, a: Optional[str] = None, b: Optional[str] = None, cursor: Optional[str] = None):
    s = store(request)
    require_read(request, repo)
    changes = s.diff_files(repo, b, repo, a) if a or b else None
    rows, next_cursor = page_of(changes, cursor) if changes is not None else ([], None)
    commits, _ = page_of(s.list_commits(repo), None, limit=200)
    return render(request, "diff.html", repo=repo, a=a, b=b, rows=rows, next_cursor=next_cursor, commits=commits)
