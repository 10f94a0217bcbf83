"""/api/v1 for uploads that send only what the store lacks (engine/uploads.py).

1. POST /repos/{repo}/chunks/missing  {"ids": [hex, ...]} -> {"missing": [hex, ...]}
2. POST /repos/{repo}/chunks         frames of (8-byte big-endian length, bytes), each stored under its own hash
3. POST /repos/{repo}/land           {"branch", "append", "description", "files": [{path, size, hash, refs}]}
   -> the commit, as one put-file makes it

Chunks are at most `MAX_CHUNK` bytes (FastCDC's largest is 4 MiB); a frame
announcing more is refused before its bytes are read.
"""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .guard import guard
from .wire import plain
from ..storage.errors import DplError

router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])

MAX_CHUNK = 16 << 20
MAX_IDS = 100_000


def _store(request: Request):
    return request.app.state.store


def _ids(texts: list[str]) -> list[bytes]:
    try:
        ids = [bytes.fromhex(t) for t in texts]
    except (TypeError, ValueError):
        ids = []
    if len(ids) != len(texts) or any(len(i) != 16 for i in ids):
        raise DplError("Chunk ids are 32 hex digits each.", hint="Send the xxh3-128 of each chunk, as hex.")
    return ids


@router.post("/repos/{repo}/chunks/missing", tags=["files"])
def missing_chunks(request: Request, repo: str, ids: list[str] = Body(..., embed=True)):
    """Which of these chunk ids the store lacks: the chunks an upload must send."""
    if len(ids) > MAX_IDS:
        raise DplError(f"Ask about at most {MAX_IDS} chunk ids at a time, not {len(ids)}.", hint="Split the question.")
    return {"missing": [oid.hex() for oid in _store(request).files.missing_chunks(_ids(ids))]}


@router.post("/repos/{repo}/chunks", tags=["files"], openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}})
async def put_chunks(request: Request, repo: str):
    """Store the chunks of the body (frames: 8-byte big-endian length, then the bytes); answers their ids."""
    files = _store(request).files
    buf = bytearray()
    stored: list[str] = []
    try:
        async for piece in request.stream():
            buf += piece
            while len(buf) >= 8:
                n = int.from_bytes(buf[:8], "big")
                if n > MAX_CHUNK:
                    raise DplError(f"A chunk of {n} bytes is larger than a chunk can be ({MAX_CHUNK}).", hint="Chunk with dpl's CDC.")
                if len(buf) < 8 + n:
                    break
                data = bytes(buf[8 : 8 + n])
                del buf[: 8 + n]
                stored.append((await run_in_threadpool(files.put_chunk, data)).hex())
    except ClientDisconnect:
        raise DplError("The client went away before the chunks ended; nothing was committed.",
                       hint="Send them again: chunks land in a commit only with the files that name them.") from None
    if buf:
        raise DplError("The body ends inside a chunk frame.", hint="Each frame is an 8-byte big-endian length and that many bytes.")
    return {"stored": stored}


@router.post("/repos/{repo}/land", tags=["files"], status_code=200)
def land(request: Request, repo: str, files: list[dict] = Body(...), branch: str = Body("master"), append: bool = Body(False),
         description: str = Body("")):
    """Commit files from their rows (path, size, hash hex, refs [[chunk hex, offset, length], ...]), every chunk already stored."""
    try:
        rows = [{"path": f["path"], "size": int(f["size"]), "hash": bytes.fromhex(f["hash"]),
                 "refs": [{"chunk": bytes.fromhex(c), "offset": int(o), "length": int(n)} for c, o, n in f["refs"]]} for f in files]
    except (KeyError, TypeError, ValueError):
        raise DplError("Each file is {path, size, hash, refs: [[chunk, offset, length], ...]}.", hint="See /docs.") from None
    commit = _store(request).files.land_rows(repo, branch, rows, append=append, description=description)
    if commit.state == "finished":
        request.app.state.metrics.commits.labels(commit.repo).inc()
        request.app.state.scheduler.wake()
    return plain(commit)
