"""The S3 gateway's writes beyond one object: CopyObject, multipart uploads,
DeleteObjects and CreateBucket.

CopyObject stores no bytes: the engine's copy-file writes the source
file's index row (its size, content hash and chunk references) under the
new path, so the copy costs one small index layer whatever the file's
size, and works across repos (chunks are shared by the whole store).

A multipart upload's parts are spooled to a directory of their own (under
the store, server/spool.py); the completed upload is put as one file, in one
commit.  Uploads in progress live in the gateway's memory: a restart forgets
them (and sweeps their parts), as it would forget a half-sent PutObject, and
the client starts again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import unquote
from xml.sax.saxutils import escape

import xxhash
from starlette.responses import Response

from . import spool
from .s3errors import S3Error, from_dpl
from .s3gateway import NS, _iso, _path, _xml
from ..client import access
from ..storage.errors import DplError


@dataclass
class Upload:
    bucket: str
    key: str
    repo: str
    branch: str
    path: str
    directory: str
    started: float


# ---------------------------------------------------------------- buckets


def create_bucket(gw, bucket: str) -> Response:
    """`BRANCH.REPO`: make the repo and the branch if missing (as Pachyderm's gateway does)."""
    branch, dot, repo = bucket.partition(".")
    if not dot or not branch or not repo:
        raise S3Error("InvalidBucketName", f"Bucket {bucket!r} is not BRANCH.REPO.")
    store = gw.store
    if repo not in {r["name"] for r in store.list_repos()}:
        store.create_repo(repo)
        store.auth.repo_created(repo, gw.local.who)  # its maker owns it, as with create-repo through the API
    else:
        gw.require(repo, "writer")
    if branch not in {b["branch"] for b in store.list_branches(repo)}:
        store.create_branch(repo, branch)
    return Response(status_code=200, headers={"Location": f"/{bucket}"})


def delete_objects(gw, bucket: str, local: str | None) -> Response:
    """DeleteObjects: every key that exists goes in one commit."""
    view = gw.view(bucket, write=True)
    keys, quiet = _delete_request(local)
    existing = []
    for key in keys:
        try:
            gw.store.files.file_row(view.repo, view.branch, _path(key))
            existing.append(key)
        except DplError:
            pass  # S3 reports a missing key as deleted
    if existing:
        gw.land([access.Delete(gw.door, view.repo, view.branch, [_path(k) for k in existing])], f"s3: delete {len(existing)} object(s)")
    done = "" if quiet else "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
    return _xml(f'<DeleteResult xmlns="{NS}">{done}</DeleteResult>')


def _delete_request(local: str | None) -> tuple[list[str], bool]:
    root = _parse(local)
    keys = [el.text or "" for el in root.iter() if _tag(el) == "Key"]
    quiet = any(_tag(el) == "Quiet" and (el.text or "").lower() == "true" for el in root.iter())
    return keys, quiet


# ------------------------------------------------------------------ copy


def copy_object(gw, bucket: str, key: str, source: str) -> Response:
    """CopyObject by reference: the engine's copy-file puts the source's index row under the new path."""
    target = gw.view(bucket, write=True)
    path = _path(key)
    source = unquote(source.split("?versionId=")[0]).lstrip("/")
    src_bucket, _, src_key = source.partition("/")
    if not src_key:
        raise S3Error("InvalidArgument", f"x-amz-copy-source {source!r} is not BUCKET/KEY.")
    src = gw.view(src_bucket)
    commit = src.pinned(gw.store)
    if commit is None:
        raise S3Error("NoSuchKey", "The source key does not exist.", f"/{source}")
    try:
        row = gw.store.file_row(src.repo, commit.id, _path(src_key))  # a file: S3 copies objects, not directories
        landed = gw.store.copy_file(src.repo, commit.id, row["path"], target.repo, target.branch, path,
                                    description=f"s3: copy /{source} to {path}")
    except DplError as e:
        raise from_dpl(e, f"/{source}") from None
    gw.on_commit()
    return _xml(f'<CopyObjectResult xmlns="{NS}"><LastModified>{_iso(landed.finished or landed.created)}</LastModified>'
                f'<ETag>"{row["hash"].hex()}"</ETag></CopyObjectResult>')


# ------------------------------------------------------------- multipart


def create_upload(gw, bucket: str, key: str) -> Response:
    import time

    view = gw.view(bucket, write=True)
    path = _path(key)
    gw.store.repos.refuse_output_branch(view.repo, view.branch, "put files into")
    upload_id = uuid.uuid4().hex
    directory = str(spool.upload_dir(gw.store.root))  # swept when a restart forgets the upload
    with gw.lock:
        gw.uploads[upload_id] = Upload(bucket, key, view.repo, view.branch, path, directory, time.time())
    return _xml(f'<InitiateMultipartUploadResult xmlns="{NS}"><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>'
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>")


def _upload(gw, upload_id: str) -> Upload:
    with gw.lock:
        upload = gw.uploads.get(upload_id)
    if upload is None:
        raise S3Error("NoSuchUpload", "The upload does not exist: it was completed, aborted, or the gateway restarted.")
    gw.require(upload.repo, "writer")
    return upload


def upload_part(gw, upload_id: str, number: str, spool: tuple[str | None, str]) -> Response:
    upload = _upload(gw, upload_id)
    if not number.isdigit() or not 1 <= int(number) <= 10000:
        raise S3Error("InvalidArgument", "partNumber must be between 1 and 10000.")
    local, digest = spool
    part = os.path.join(upload.directory, f"{int(number):05d}-{digest}")
    for old in os.listdir(upload.directory):  # a part sent again replaces the earlier one
        if old.startswith(f"{int(number):05d}-"):
            os.unlink(os.path.join(upload.directory, old))
    if local is None:
        open(part, "wb").close()
    else:
        shutil.move(local, part)
    return Response(status_code=200, headers={"ETag": f'"{digest}"'})


def complete_upload(gw, bucket: str, key: str, upload_id: str, local: str | None) -> Response:
    upload = _upload(gw, upload_id)
    root = _parse(local)
    wanted = []
    for part in (el for el in root.iter() if _tag(el) == "Part"):
        fields = {_tag(c): (c.text or "").strip() for c in part}
        if not fields.get("PartNumber", "").isdigit():
            raise S3Error("MalformedXML", "Each Part of the upload needs a PartNumber.")
        wanted.append((int(fields["PartNumber"]), fields.get("ETag", "").strip('"')))
    have = {name[:5]: name for name in os.listdir(upload.directory)}
    if not wanted or [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
        raise S3Error("InvalidPartOrder", "The parts must be listed in ascending order, each once.")
    fd, whole = tempfile.mkstemp(prefix="dpl-s3-whole-", dir=upload.directory)
    landed = False
    digest = xxhash.xxh3_128()  # the whole file's content hash, as dpl stores it: its ETag
    try:
        with os.fdopen(fd, "wb") as out:
            for number, etag in wanted:
                name = have.get(f"{number:05d}")
                if name is None or (etag and not name.endswith("-" + etag)):
                    raise S3Error("InvalidPart", f"Part {number} was not uploaded, or its ETag differs.")
                with open(os.path.join(upload.directory, name), "rb") as part:
                    while piece := part.read(8 << 20):
                        digest.update(piece)
                        out.write(piece)
        op = access.Put(gw.door, upload.repo, upload.branch, upload.path, whole)
        gw.land([op], f"s3: put {upload.path} ({len(wanted)} parts)")
        landed = True
    finally:
        if landed:  # a failed completion keeps the parts: the client may complete again
            with gw.lock:
                gw.uploads.pop(upload_id, None)
            shutil.rmtree(upload.directory, ignore_errors=True)
        elif os.path.exists(whole):
            os.unlink(whole)
    return _xml(f'<CompleteMultipartUploadResult xmlns="{NS}"><Location>/{escape(bucket)}/{escape(key)}</Location>'
                f'<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key><ETag>"{digest.hexdigest()}"</ETag>'
                "</CompleteMultipartUploadResult>")


def abort_upload(gw, upload_id: str) -> Response:
    upload = _upload(gw, upload_id)
    with gw.lock:
        gw.uploads.pop(upload_id, None)
    shutil.rmtree(upload.directory, ignore_errors=True)
    return Response(status_code=204)


def list_uploads(gw, bucket: str) -> Response:
    gw.view(bucket)
    with gw.lock:
        mine = [(i, u) for i, u in gw.uploads.items() if u.bucket == bucket]
    rows = "".join(f"<Upload><Key>{escape(u.key)}</Key><UploadId>{i}</UploadId><Initiated>{_iso(u.started)}</Initiated></Upload>"
                   for i, u in mine)
    return _xml(f'<ListMultipartUploadsResult xmlns="{NS}"><Bucket>{escape(bucket)}</Bucket>'
                f"<IsTruncated>false</IsTruncated>{rows}</ListMultipartUploadsResult>")


# ------------------------------------------------------------------- xml


def _parse(local: str | None) -> ET.Element:
    if local is None:
        raise S3Error("MalformedXML", "The request body is empty; it should be XML.")
    try:
        return ET.parse(local).getroot()
    except ET.ParseError:
        raise S3Error("MalformedXML", "The request body is not well-formed XML.") from None


def _tag(el: ET.Element) -> str:
    return el.tag.rpartition("}")[2]
