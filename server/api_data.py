"""/api/v1 for data: repos, branches, commits and files.

Each handler parses its request and makes one call to the Store (the same
public methods the embedded CLI calls); what it returns goes out through
`wire.plain`.  Handlers are plain `def`s, run on the server's thread pool,
because the Store blocks (a small get-file from a store on this machine is
the exception: see `get_content`).  Bodies stream both ways: an upload is spooled to
the store's disk as it arrives (spool.py; never held in memory) and a download is sent
chunk by chunk, from the byte a Range header asks for.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from . import spool
from .guard import guard, user
from .wire import decode_cursor, page, page_newest_first, plain
from ..storage.paths import normalize_path

router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])  # guard.RULES: who may call each route


def _store(request: Request):
    return request.app.state.store


def _landed(request: Request, commit) -> dict:
    """A commit the request made: count it and wake the scheduler when it landed."""
    if commit.state == "finished":
        request.app.state.metrics.commits.labels(commit.repo).inc()
        request.app.state.scheduler.wake()
    return plain(commit)


# ------------------------------------------------------------- file bytes
#
# First in the module, the puts next: routes are matched in the order they are
# declared, one by one, and these are the requests a loaded server answers most.

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


# A file up to this size is read whole in the request's one trip to the thread
# pool and sent as one body; a bigger one streams, a chunk per trip.  Each trip
# waits for a pool thread and then for the event loop again, and under load
# (commits holding the GIL, a busy machine) those waits, not the reading, were
# most of a small get-file's time.
WHOLE = 1 << 20
# A put of a file up to this size (by its Content-Length) is held in memory;
# a bigger one is spooled to the store's disk as it arrives.
IN_MEMORY = 1 << 20


@router.get("/repos/{repo}/content", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "The bytes of a Range."}})
async def get_content(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """A file's bytes, streamed; one `Range: bytes=a-b` (or `a-`, `-n`) gives a 206."""
    store = _store(request)
    if on_this_machine(store):
        # The lookup and a small file's bytes come from this machine's memory and
        # disk: answered on the event loop, they cost less than the trip to a pool
        # thread and back, and the pool would not run them beside other requests
        # anyway (they hold the interpreter lock).  Big files still stream from the pool.
        return _content(store, repo, path, ref, request.headers.get("range"))
    return await run_in_threadpool(_content, store, repo, path, ref, request.headers.get("range"))


# Puts committed at once on the pool; the rest wait their turn on the event
# loop, holding no thread.  Commits take turns to land anyway, and each holds
# the interpreter lock for most of its ~2 ms, so sixteen at once only queued
# for the lock, the event loop behind them: a get-file waited on every commit
# in flight (p50 16 ms, p99 77-116 ms with 16 clients committing; with two at
# once 5-8 ms and 15-60 ms, and as many commits a second).
WRITERS = 2


async def _writing(request: Request, fn, *args, **kwargs):
    """Run a commit on the pool, at most `WRITERS` at once."""
    import functools

    import anyio

    state = request.app.state
    if getattr(state, "writers", None) is None:  # made in the server's event loop, which it belongs to
        state.writers = anyio.CapacityLimiter(WRITERS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=state.writers)


def on_this_machine(store) -> bool:
    """Whether the store's reads never wait on the network (local chunks, SQLite metadata)."""
    return not store.chunks.remote and store.db.dialect == "sqlite"


def _content(store, repo: str, path: str, ref: Optional[str], wanted: Optional[str]) -> Response:
    row = store.file_row(repo, ref, path)
    size = row["size"]
    start, end, status = 0, size, 200
    if wanted:
        m = _RANGE.match(wanted.strip())
        if m is None or m.groups() == ("", ""):
            return _unsatisfiable(size, "Only one range, bytes=START-END, is served.")
        a, b = m.groups()
        if a == "":
            start = max(0, size - int(b))
        else:
            start, end = int(a), min(size, int(b) + 1) if b else size
        if start >= size or start >= end:
            return _unsatisfiable(size, f"The range starts past the file's {size} bytes.")
        status = 206
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start), "ETag": f'"{row["hash"].hex()}"'}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    pieces = store.files.range_pieces(row["refs"], start, end)
    if end - start <= WHOLE:
        return Response(b"".join(pieces), status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(pieces, status_code=status, headers=headers, media_type="application/octet-stream")


@router.put("/repos/{repo}/content", tags=["files"], openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}})
async def put_content(request: Request, repo: str, path: str, branch: str = "master", append: bool = False, description: str = ""):
    """Put one file (the raw request body) at `path`, as one commit."""
    from ..engine.files import Source

    length = request.headers.get("content-length", "")
    if not append and length.isdigit() and int(length) <= IN_MEMORY:
        # A small file (most puts) is held in memory and committed in one trip to
        # the pool: no spool directory to make, write and remove.
        try:
            body = await request.body()
        except ClientDisconnect:
            raise spool.went_away() from None
        commit = await _writing(request, _store(request).put_bytes, repo, branch, {normalize_path(path): body}, description=description)
        return _landed(request, commit)
    async with spool.directory(_store(request).root) as work:
        await spool.spool(request, work / "body")
        commit = await _writing(request, _store(request).put_files, repo, branch, [Source(str(work / "body"), normalize_path(path))],
                                append=append, description=description)
    return _landed(request, commit)


@router.post("/repos/{repo}/upload", tags=["files"], openapi_extra={"requestBody": {"content": {"application/x-tar": {}}}})
async def upload(request: Request, repo: str, branch: str = "master", dest: str = "/", append: bool = False, description: str = ""):
    """Put every file of a tar stream under `dest`, as one commit (`dpl put-file -r`)."""
    from ..engine.files import Source

    async with spool.directory(_store(request).root) as work:
        await spool.spool(request, work / "body.tar")
        tree = work / "tree"
        await run_in_threadpool(spool.untar, work / "body.tar", tree)
        commit = await _writing(request, _store(request).put_files, repo, branch, [Source(str(tree), normalize_path(dest, allow_root=True))],
                                append=append, description=description)
    return _landed(request, commit)


# --------------------------------------------------------------------- repos


@router.get("/repos", tags=["repos"])
def list_repos(request: Request, limit: Optional[int] = None, cursor: Optional[str] = None):
    rows = _store(request).list_repos()
    mine = _store(request).auth.readable(user(request), [r["name"] for r in rows])
    return page([r for r in rows if r["name"] in mine], limit, cursor)


@router.post("/repos", tags=["repos"], status_code=201)
def create_repo(request: Request, name: str = Body(...), description: str = Body("")):
    made = _store(request).create_repo(name, description)
    _store(request).auth.repo_created(name, user(request))
    return plain(made)


@router.get("/repos/{repo}", tags=["repos"])
def inspect_repo(request: Request, repo: str):
    return plain(_store(request).inspect_repo(repo))


@router.delete("/repos/{repo}", tags=["repos"])
def delete_repo(request: Request, repo: str, force: bool = False, dry_run: bool = False):
    """Delete a repo (with `force`, what was derived from it too); `dry_run` only lists what would go."""
    store = _store(request)
    plan = store.history.delete_repo(repo, force=force, dry_run=True)
    for other in plan["repos"]:  # --force takes what was derived from it too: each needs its owner
        store.auth.require(user(request), other, "owner", f"delete it (delete-repo {repo} --force takes it)")
    if dry_run:
        return plain(plan)
    done = store.delete_repo(repo, force=force)
    store.auth.repos_deleted(done["repos"])
    return plain(done)


@router.get("/repos/{repo}/branches", tags=["branches"])
def list_branches(request: Request, repo: str, limit: Optional[int] = None, cursor: Optional[str] = None):
    return page(_store(request).list_branches(repo), limit, cursor)


@router.put("/repos/{repo}/branches/{branch}", tags=["branches"])
def create_branch(request: Request, repo: str, branch: str, head: Optional[str] = Body(None, embed=True)):
    return plain(_store(request).create_branch(repo, branch, head))


@router.delete("/repos/{repo}/branches/{branch}", tags=["branches"], status_code=204)
def delete_branch(request: Request, repo: str, branch: str, force: bool = False):
    _store(request).delete_branch(repo, branch, force=force)


# ------------------------------------------------------------------- commits


@router.get("/repos/{repo}/commits", tags=["commits"])
def list_commits(request: Request, repo: str, branch: Optional[str] = None, limit: Optional[int] = None, cursor: Optional[str] = None):
    return page_newest_first(_store(request).list_commits(repo, branch), limit, cursor)


@router.post("/repos/{repo}/commits", tags=["commits"], status_code=201)
def start_commit(request: Request, repo: str, branch: str = Body("master"), description: str = Body("")):
    return plain(_store(request).start_commit(repo, branch, description))


@router.get("/repos/{repo}/commits/{ref}", tags=["commits"])
def inspect_commit(request: Request, repo: str, ref: str):
    return plain(_store(request).inspect_commit(repo, ref))


@router.get("/repos/{repo}/resolve", tags=["commits"])
def resolve_commit(request: Request, repo: str, ref: Optional[str] = None, allow_open: bool = False):
    return plain(_store(request).resolve_commit(repo, ref, allow_open=allow_open))


@router.post("/repos/{repo}/commits/{ref}/finish", tags=["commits"])
def finish_commit(request: Request, repo: str, ref: str, description: Optional[str] = Body(None, embed=True)):
    return _landed(request, _store(request).finish_commit(repo, ref, description))


@router.delete("/repos/{repo}/commits/{ref}", tags=["commits"])
def delete_commit(request: Request, repo: str, ref: str, force: bool = False):
    return plain(_store(request).delete_commit(repo, ref, force=force))


@router.post("/repos/{repo}/commits/{ref}/squash", tags=["commits"])
def squash_commit(request: Request, repo: str, ref: str, force: bool = False):
    return plain(_store(request).squash_commit(repo, ref, force=force))


@router.get("/repos/{repo}/commits/{ref}/provenance", tags=["provenance"])
def commit_provenance(request: Request, repo: str, ref: str):
    return plain(_store(request).commit_provenance(repo, ref))


@router.get("/repos/{repo}/commits/{ref}/origins", tags=["provenance"])
def origin_commits(request: Request, repo: str, ref: str):
    return plain(_store(request).origin_commits(repo, ref))


@router.get("/commits/{commit_id}", tags=["commits"])
def commits_with_id(request: Request, commit_id: str):
    """Every commit sharing a global id: one user commit and what it triggered downstream."""
    commits = _store(request).commits_with_id(commit_id)
    mine = _store(request).auth.readable(user(request), {c.repo for c in commits})
    return plain([c for c in commits if c.repo in mine])


# --------------------------------------------------------------------- files


def _pinned_page(request: Request, repo: str, ref: Optional[str], cursor: Optional[str], limit: Optional[int], listing):
    """A page of a listing of one commit: the first page resolves `ref`, the
    cursor carries that commit to the next pages."""
    pinned = decode_cursor(cursor).get("commit")
    if pinned is None:
        pinned = _store(request).resolve_commit(repo, ref).id
        rows = listing(ref)  # the user's own ref: its errors read as the embedded CLI's
    else:
        rows = listing(pinned)
    return page(rows, limit, cursor, commit=pinned)


@router.get("/repos/{repo}/files", tags=["files"])
def list_files(request: Request, repo: str, ref: Optional[str] = None, path: str = "/", recursive: bool = False,
               limit: Optional[int] = None, cursor: Optional[str] = None):
    """Entries under `path` of a commit (direct children, or every file with `recursive`)."""
    return _pinned_page(request, repo, ref, cursor, limit, lambda r: _store(request).list_files(repo, r, path, recursive=recursive))


@router.get("/repos/{repo}/glob", tags=["files"])
def glob_files(request: Request, repo: str, pattern: str, ref: Optional[str] = None, limit: Optional[int] = None, cursor: Optional[str] = None):
    return _pinned_page(request, repo, ref, cursor, limit, lambda r: _store(request).glob_files(repo, r, pattern))


@router.get("/repos/{repo}/diff", tags=["files"])
def diff_files(request: Request, repo: str, ref: Optional[str] = None, other_repo: Optional[str] = None, other_ref: Optional[str] = None,
               limit: Optional[int] = None, cursor: Optional[str] = None):
    return page(_store(request).diff_files(repo, ref, other_repo, other_ref), limit, cursor)


@router.get("/repos/{repo}/file", tags=["files"])
def file_info(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """One file's path, size and content hash, and the commit it was read from."""
    row = _store(request).file_row(repo, ref, path)  # first, with the user's ref: its errors read as the embedded CLI's
    commit = _store(request).resolve_commit(repo, ref)
    return {"repo": repo, "commit": commit.id, "path": row["path"], "size": row["size"], "hash": row["hash"].hex()}


@router.post("/repos/{repo}/copy", tags=["files"], status_code=201)
def copy_file(request: Request, repo: str, src_repo: str = Body(...), src_path: str = Body(...), src_ref: Optional[str] = Body(None),
              branch: str = Body("master"), path: Optional[str] = Body(None), description: str = Body("")):
    """Copy a file or directory of `src_repo` into `repo` by reference: no byte is stored again (`dpl copy-file`)."""
    _store(request).auth.require(user(request), src_repo, "reader", "copy files from it")
    return _landed(request, _store(request).copy_file(src_repo, src_ref, src_path, repo, branch, path, description))


@router.get("/repos/{repo}/inspect-file", tags=["files"])
def inspect_file(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """A file or directory: type, size, hash, chunk refs, and the commit it was read from (`dpl inspect-file`)."""
    return _store(request).inspect_file(repo, ref, path)


@router.put("/repos/{repo}/branches/{branch}/trigger", tags=["branches"])
def set_trigger(request: Request, repo: str, branch: str, source: str = Body(...), size: Optional[int] = Body(None),
                commits: Optional[int] = Body(None), cron: Optional[str] = Body(None), all_of: bool = Body(False)):
    """Make `branch` follow `source` when the conditions hold (`dpl create-branch --trigger`)."""
    return _store(request).set_trigger(repo, branch, source, size=size, commits=commits, cron=cron, all_of=all_of)


@router.get("/repos/{repo}/branches/{branch}", tags=["branches"])
def inspect_branch(request: Request, repo: str, branch: str):
    """A branch: head, when it moved, open commit, readers and trigger (`dpl inspect-branch`)."""
    return _store(request).inspect_branch(repo, branch)


def _unsatisfiable(size: int, message: str) -> Response:
    body = json.dumps({"error": message, "hint": "Ask for bytes=START-END within the file.", "type": "RangeNotSatisfiable"})
    return Response(body, status_code=416, media_type="application/json", headers={"Content-Range": f"bytes */{size}"})


@router.delete("/repos/{repo}/content", tags=["files"])
def delete_content(request: Request, repo: str, path: list[str] = Query(...), branch: str = "master", description: str = ""):
    """Delete files or directories, as one commit."""
    return _landed(request, _store(request).delete_files(repo, branch, path, description))
