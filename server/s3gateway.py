"""The S3 gateway: dpl's repos through the S3 API, for boto3, s3fs, DuckDB and the AWS CLI.

    dpl serve --s3 127.0.0.1:9000        # beside the HTTP API, on its own port
    dpl s3-gateway --listen 127.0.0.1:9000   # the gateway alone

Buckets are `BRANCH.REPO`, as in Pachyderm's gateway: reads see the
branch's head when the request arrives, writes land on the branch (one
commit per PutObject, CopyObject, DeleteObject(s) or completed multipart
upload).  `COMMIT.REPO`, or a bare commit id that names a commit in one
repo only, is a read-only view pinned to that commit.  An object's key is
its path in the repo; its ETag is the file's content hash.

A Starlette app on uvicorn (the `dpl serve` stack), on a port of its own:
S3 clients address buckets at the root of a host, which the API's routes
already hold.  Every request is checked by `s3auth.verify` before anything
is read.  Handlers do only S3's side (parse, answer XML); reads go through
client/access.py (the ranged chunk reads dpl:// uses) and writes through
its `land` (one commit per call), except CopyObject and multipart, which
live in `s3writes`; listings are in `s3listing`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import xxhash
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import s3auth, spool
from .observe import log_event
from .s3errors import S3Error, from_dpl
from ..client import access
from ..storage.errors import DplError, InvalidPath
from ..storage.paths import normalize_path

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
PIECE = 4 << 20  # bytes per streamed read of a GetObject: a few chunks, fetched side by side


@dataclass
class View:
    """What a bucket names: a branch of a repo (readable and writable) or one commit (read-only)."""

    repo: str
    branch: str | None
    commit: str | None = None

    def pinned(self, store):
        """The commit a read sees, or None for a branch with no commit yet."""
        if self.commit:
            return store.get_commit(self.repo, self.commit)
        if store.repos.branch_head(self.repo, self.branch) is None:
            return None
        return store.resolve_commit(self.repo, self.branch)


class Gateway:
    """The S3 face of one store; `app` is its ASGI application."""

    def __init__(self, store, keys: s3auth.Keys, *, on_commit=None):
        self.store, self.keys = store, keys
        self.door = access.Embedded(store)
        self.on_commit = on_commit or (lambda: None)  # dpl serve's scheduler wakes: jobs start as commits land
        self.uploads: dict = {}  # multipart uploads in progress (s3writes.Upload), by id
        self.lock = threading.Lock()
        self.local = threading.local()
        self.app = Starlette(routes=[Route("/{rest:path}", self.handle, methods=["GET", "HEAD", "PUT", "POST", "DELETE"])])

    # ------------------------------------------------------------ dispatch

    async def handle(self, request: Request) -> Response:
        began = time.perf_counter()
        method = request.method
        path = request.scope["path"]
        who = None  # until the signature says who
        try:
            raw_path = request.scope.get("raw_path", path.encode()).decode("latin-1").split("?")[0]
            payload, who = s3auth.verify(self.keys, self.store.auth, method, raw_path,
                                         request.scope.get("query_string", b"").decode("latin-1"), request.headers)
            async with spool.directory(self.store.root) if method in ("PUT", "POST") else contextlib.nullcontext() as work:
                body = await self._spool(request, payload, work / "body") if work else None
                response = await run_in_threadpool(self._dispatch, request, method, path, body, who)
        except S3Error as e:
            e.resource = e.resource or path
            response = e.response(method)
        except DplError as e:
            response = from_dpl(e, path).response(method)
        except Exception as e:  # a bug, not the client's doing: an S3 InternalError, the traceback in the log
            log_event("s3.error", path=path, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            response = S3Error("InternalError", "The gateway failed on this request; its log says why.", path).response(method)
        log_event("s3.request", method=method, path=path, status=response.status_code, ms=round((time.perf_counter() - began) * 1000, 2))
        if method not in ("GET", "HEAD") and self.store.auth.active():
            # the audit row of a write, refused ones too, as the API writes them
            await run_in_threadpool(self.store.auth.audit, who, f"s3 {method}", path, response.status_code)
        return response

    def _dispatch(self, request: Request, method: str, path: str, spool, who) -> Response:
        self.local.who = who  # this request's user, for `view` (each request runs in one thread)
        query = dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        bucket, _, key = path.lstrip("/").partition("/")
        from . import s3listing, s3writes

        if not bucket:
            if method == "GET":
                return self.list_buckets()
            raise S3Error("MethodNotAllowed", "Only GET (ListBuckets) is answered at the root.")
        if not key:
            if method in ("GET", "HEAD"):
                if "location" in query:
                    return _xml(f'<LocationConstraint xmlns="{NS}"></LocationConstraint>')
                if "uploads" in query:
                    return s3writes.list_uploads(self, bucket)
                view = self.view(bucket)
                return Response(status_code=200) if method == "HEAD" else s3listing.list_objects(self, bucket, view, query)
            if method == "PUT":
                return s3writes.create_bucket(self, bucket)
            if method == "POST" and "delete" in query:
                return s3writes.delete_objects(self, bucket, spool[0])
            raise S3Error("NotImplemented", f"{method} on a bucket is not supported by the dpl S3 gateway.")
        if method in ("GET", "HEAD"):
            return self.get_object(bucket, key, request.headers.get("range"), head=method == "HEAD")
        if method == "PUT":
            if "uploadId" in query:
                return s3writes.upload_part(self, query["uploadId"], query.get("partNumber", ""), spool)
            if request.headers.get("x-amz-copy-source"):
                return s3writes.copy_object(self, bucket, key, request.headers["x-amz-copy-source"])
            return self.put_object(bucket, key, spool)
        if method == "POST":
            if "uploads" in query:
                return s3writes.create_upload(self, bucket, key)
            if "uploadId" in query:
                return s3writes.complete_upload(self, bucket, key, query["uploadId"], spool[0])
        if method == "DELETE":
            if "uploadId" in query:
                return s3writes.abort_upload(self, query["uploadId"])
            return self.delete_object(bucket, key)
        raise S3Error("NotImplemented", f"This {method} request is not supported by the dpl S3 gateway.")

    async def _spool(self, request: Request, payload: str, into: Path) -> tuple[str | None, str]:
        """The body in `into`, checked against the payload hash the client
        signed; (file, xxh3 hex of the bytes), file None when empty."""
        import hashlib

        check = hashlib.sha256() if len(payload) == 64 else None
        digest = xxhash.xxh3_128()
        chunked = payload.startswith("STREAMING-") or "aws-chunked" in request.headers.get("content-encoding", "")
        size = await spool.spool(request, into, pieces=_dechunk(request.stream()) if chunked else None,
                                 digests=[d for d in (check, digest) if d is not None])
        if check is not None and check.hexdigest() != payload:
            raise S3Error("XAmzContentSHA256Mismatch", "The body's SHA-256 is not the one the request was signed with.")
        return (str(into) if size else None), digest.hexdigest()

    # -------------------------------------------------------------- buckets

    def view(self, bucket: str, *, write: bool = False) -> View:
        """The branch or commit a bucket names; a write to a commit is refused."""
        store = self.store
        head, dot, repo = bucket.partition(".")
        if not dot:
            found = store.commits_with_id(bucket)
            if len(found) != 1:
                hint = ("it names commits in several repos: write COMMIT.REPO" if found else
                        "buckets are BRANCH.REPO, COMMIT.REPO or a commit id")
                raise S3Error("NoSuchBucket", f"Bucket {bucket!r} names no branch or commit ({hint}).")
            view = View(found[0].repo, None, found[0].id)
        else:
            try:
                branches = {b["branch"] for b in store.list_branches(repo)}
            except DplError:
                raise S3Error("NoSuchBucket", f"Repo {repo!r} does not exist (bucket {bucket!r}).") from None
            self.require(repo, "reader")  # which branches and commits a repo has is the repo's to tell
            if head in branches:
                view = View(repo, head)
            else:
                try:
                    commit = store.resolve_commit(repo, head)
                except DplError:
                    if write:
                        return View(repo, head)  # a new branch: the write makes it, as put-file does
                    raise S3Error("NoSuchBucket", f"{head!r} is no branch or commit of repo {repo!r}.") from None
                view = View(repo, None, commit.id)
        if write and view.branch is None:
            raise S3Error("AccessDenied", f"Bucket {bucket!r} is pinned to commit {view.commit}, and commits do not change. "
                          "Write to a BRANCH.REPO bucket.")
        self.require(view.repo, "writer" if write else "reader")
        return view

    def require(self, repo: str, role: str) -> None:
        """Refuse (AccessDenied) unless this request's user holds `role` on `repo` (no user: an admin or open gateway)."""
        who = getattr(self.local, "who", None)
        if who is not None:
            self.store.auth.require(who, repo, role, "read it" if role == "reader" else "write it")

    def list_buckets(self) -> Response:
        rows = []
        repos = [r["name"] for r in self.store.list_repos()]
        who = getattr(self.local, "who", None)
        for repo in sorted(self.store.auth.readable(who, repos)) if who is not None else repos:
            for b in self.store.list_branches(repo):
                rows.append(f"<Bucket><Name>{escape(b['branch'])}.{escape(repo)}</Name>"
                            f"<CreationDate>{_iso(b['created'])}</CreationDate></Bucket>")
        return _xml(f'<ListAllMyBucketsResult xmlns="{NS}"><Owner><ID>dpl</ID><DisplayName>dpl</DisplayName></Owner>'
                    f"<Buckets>{''.join(rows)}</Buckets></ListAllMyBucketsResult>")

    # -------------------------------------------------------------- objects

    def get_object(self, bucket: str, key: str, range_header: str | None, *, head: bool) -> Response:
        view = self.view(bucket)
        commit = view.pinned(self.store)
        if commit is None or key.endswith("/"):
            raise S3Error("NoSuchKey", "The specified key does not exist.")
        path = _path(key)
        try:
            reader = self.door.reader(view.repo, commit.id, path)
        except DplError as e:
            error = from_dpl(e)
            if error.code == "NoSuchKey":
                error.message = f"Key {key!r} is not in bucket {bucket!r} (commit {commit.id[:12]} of repo {view.repo!r})."
            raise error from None
        start, end, status = 0, reader.size, 200
        headers = {"ETag": f'"{reader.hash}"', "Last-Modified": formatdate(commit.finished or commit.created, usegmt=True),
                   "Accept-Ranges": "bytes", "x-amz-version-id": commit.id}
        if range_header:
            start, end = _range(range_header, reader.size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{reader.size}"
        headers["Content-Length"] = str(end - start)
        if head:
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")

        ahead = access.ReadAhead(reader)  # the next piece is read and verified while this one is sent

        def pieces():
            for at in range(start, end, PIECE):
                yield ahead.fetch(at, min(end, at + PIECE))

        return StreamingResponse(pieces(), status_code=status, headers=headers, media_type="application/octet-stream")

    def put_object(self, bucket: str, key: str, spool: tuple[str | None, str]) -> Response:
        view = self.view(bucket, write=True)
        local, digest = spool
        if key.endswith("/"):  # a directory marker: in dpl a directory exists by the files beneath it
            return Response(status_code=200, headers={"ETag": f'"{digest}"'})
        path = _path(key)
        op = access.Put(self.door, view.repo, view.branch, path, local or _empty_file())
        try:
            commit = self.land([op], f"s3: put {path}")
        finally:
            op.discard()
        # The spool's xxh3-128 is the content hash dpl stores, so the ETag is the one GetObject gives.
        return Response(status_code=200, headers={"ETag": f'"{digest}"', "x-amz-version-id": getattr(commit, "id", "")})

    def delete_object(self, bucket: str, key: str) -> Response:
        view = self.view(bucket, write=True)
        try:
            self.land([access.Delete(self.door, view.repo, view.branch, [_path(key)])], f"s3: delete /{key}")
        except DplError as e:
            if from_dpl(e).code not in ("NoSuchKey", "NoSuchBucket"):
                raise
        return Response(status_code=204)  # S3 answers a delete of a missing key as done

    def land(self, ops: list, description: str):
        landed = access.land(ops, description)
        self.on_commit()
        return landed[0] if landed else None

def _range(header: str, size: int) -> tuple[int, int]:
    """[start, end) of a `bytes=a-b` header (one range, as S3 serves)."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.partition("-")
    try:
        if unit.strip() != "bytes" or not dash or "," in spec:
            raise ValueError
        if not first:
            start, end = max(0, size - int(last)), size
        else:
            start, end = int(first), (min(size, int(last) + 1) if last else size)
    except ValueError:
        raise S3Error("InvalidRange", f"The range {header!r} is not one this gateway reads (bytes=START-END).") from None
    if start >= size or start >= end:
        raise S3Error("InvalidRange", "The requested range is not satisfiable.")
    return start, end


async def _dechunk(stream):
    """The payload of an aws-chunked body (`SIZE;chunk-signature=...\\r\\nDATA\\r\\n`...,
    then trailers).  The seed signature was checked; chunk signatures are not."""
    buffer = b""
    need = None
    async for piece in stream:
        buffer += piece
        while True:
            if need is None:
                line, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                need = int(line.split(b";")[0], 16)
                buffer = rest
                if need == 0:
                    return
            if len(buffer) < need + 2:
                break
            yield buffer[:need]
            buffer, need = buffer[need + 2 :], None


def _path(key: str) -> str:
    try:
        return normalize_path(key)
    except InvalidPath as e:
        raise S3Error("InvalidArgument", f"Key {key!r} is not a path dpl can store: {e.message}") from None






def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _xml(body: str, status: int = 200) -> Response:
    return Response(('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode(), status_code=status, media_type="application/xml")


def _empty_file() -> str:
    fd, local = tempfile.mkstemp(prefix="dpl-s3-")
    os.close(fd)
    return local
