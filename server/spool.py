"""Request bodies spooled to the store's disk as they arrive, never held in memory.

Each upload (an API put, an S3 PutObject, a multipart upload's parts) gets
a directory of its own under the store's tmp/uploads, on the disk the
chunks go to (not /tmp, which may be memory), named by the server process
that receives it; the handler removes it once the put has landed or
failed, and a restarted server or gateway sweeps what a killed one left
(`sweep`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from ..storage import pids
from ..storage.errors import DplError, InvalidPath


async def spool(request: Request, into: Path, *, pieces=None, digests=()) -> int:
    """The request body (or `pieces`, an async iterator of its bytes), written
    to `into` as it arrives, and fed to each of `digests` (hashlib-style
    objects) on the way.  Answers its size in bytes."""
    n = held = 0
    pending: list[bytes] = []
    try:
        with open(into, "wb") as f:

            def flush(batch: bytes) -> None:
                f.write(batch)
                for digest in digests:
                    digest.update(batch)

            # Writing and hashing go to the thread pool a MiB at a time, so a
            # big upload never stalls the event loop that serves everyone else.
            async for piece in request.stream() if pieces is None else pieces:
                pending.append(piece)
                n, held = n + len(piece), held + len(piece)
                if held >= 1 << 20:
                    await run_in_threadpool(flush, b"".join(pending))
                    pending, held = [], 0
            if pending:
                await run_in_threadpool(flush, b"".join(pending))
    except ClientDisconnect:
        raise went_away() from None
    return n


def went_away() -> DplError:
    return DplError("The client went away before the upload ended; nothing was committed.",
                    hint="Send it again: a put lands only once its whole body has arrived.")


def upload_dir(root) -> Path:
    """A fresh directory for one upload, under the store at `root`: on the
    same disk as its chunks (neither gc nor fsck looks there), and named by
    this process so that a restart knows which ones a killed server left."""
    base = Path(root) / "tmp" / "uploads"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base, prefix=f"{os.getpid()}-"))


@contextlib.asynccontextmanager
async def directory(root):
    """A fresh upload directory under the store at `root` (`upload_dir`),
    removed once the request is done with it, landed or not."""
    work = await run_in_threadpool(upload_dir, root)
    try:
        yield work
    finally:
        await run_in_threadpool(shutil.rmtree, work, True)


def sweep(root) -> int:
    """Remove the spooled uploads of server processes no longer running (a SIGKILL
    skips the `finally` that removes them); those of a live server on the same
    store are left alone.  Answers how many went."""
    base = Path(root) / "tmp" / "uploads"
    gone = 0
    for entry in base.iterdir() if base.is_dir() else ():
        pid = entry.name.partition("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or pids.alive(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        gone += 1
    return gone


def untar(archive: Path, into: Path) -> None:
    """The files of a tar upload, under `into`; anything but files and directories is refused."""
    into.mkdir()
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                if not (member.isfile() or member.isdir()):
                    raise InvalidPath(f"{member.name!r} in the upload is neither a file nor a directory.", hint="Upload regular files.")
            # The "data" filter refuses absolute paths, `..` and links out of the tree.
            tar.extractall(into, filter="data")
    except tarfile.TarError as e:
        raise DplError(f"The upload is not a readable tar stream ({e}).", hint="Send a tar of the files (application/x-tar).") from None
