"""Moving file bytes between this machine and a server, streamed both ways.

An upload of local files negotiates chunks: the client chunks them with the
server's CDC (`chunked`), asks which chunk ids the server lacks, sends only
those (`chunk_frames`, rebuilt from the files, never held all in memory),
then has the server land the files from their rows.  Re-putting a big file
that changed in one place sends about the chunks around the change.  Stdin
goes as one request, its raw bytes (or a tar stream, written by a thread
into a pipe while the HTTP client reads the other end), landed as one commit.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import threading
from typing import Callable, Iterator

PIECE = 1 << 20

Progress = Callable[[int, int], None]  # (files done, bytes done), as the embedded put reports it


def walk(local: str, dest: str) -> Iterator[tuple[str, str]]:
    """(repo path, local path) of each file a source holds: what the embedded put walks."""
    if local == "-" or not os.path.isdir(local):
        yield dest, local
        return
    prefix = "" if dest == "/" else dest
    root_len = len(os.path.join(local, ""))
    for dirpath, dirnames, filenames in os.walk(local):
        dirnames.sort()
        rel = dirpath[root_len:]
        base = f"{prefix}/{rel}/" if rel else f"{prefix}/"
        for name in sorted(filenames):
            yield base + name, os.path.join(dirpath, name)


def single_file(sources) -> tuple[str, str] | None:
    """(repo path, local path) when the put is one plain file or stdin: sent raw."""
    if len(sources) != 1:
        return None
    src = sources[0]
    if src.local == "-":
        return src.dest, "-"
    try:
        return (src.dest, src.local) if stat.S_ISREG(os.stat(src.local).st_mode) else None
    except OSError:
        return None


def file_body(local: str, progress: Progress | None) -> Iterator[bytes]:
    f = sys.stdin.buffer if local == "-" else open(local, "rb")
    sent = 0
    try:
        while piece := f.read(PIECE):
            sent += len(piece)
            yield piece
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    if progress:
        progress(1, sent)


def tar_body(sources, progress: Progress | None) -> Iterator[bytes]:
    """A tar stream of every file of `sources`, named by repo path."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def write():
        files = nbytes = 0
        try:
            with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for src in sources:
                    for path, local in walk(src.local, src.dest):
                        info = tarfile.TarInfo(path.lstrip("/"))
                        info.mode = 0o644
                        if local == "-":  # a tar member's size comes first: stdin is read whole
                            data = sys.stdin.buffer.read()
                            info.size = len(data)
                            tar.addfile(info, io.BytesIO(data))
                        else:
                            with open(local, "rb") as f:
                                info.size = os.fstat(f.fileno()).st_size
                                tar.addfile(info, f)
                        files, nbytes = files + 1, nbytes + info.size
                        if progress and files % 1000 == 0:
                            progress(files, nbytes)
            if progress:
                progress(files, nbytes)
        except BaseException as e:  # noqa: BLE001 - handed to the reading side, which raises it
            failure.append(e)

    writer = threading.Thread(target=write, name="dpl-upload", daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb") as pipe:
        while piece := pipe.read(PIECE):
            yield piece
    writer.join()
    if failure:
        raise failure[0]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------- negotiated uploads


class _Ids:
    """A chunk store that keeps nothing: the client only wants the chunk ids
    and boundaries the server's `ChunkWriter` would make of the same bytes."""

    def put(self, oid: bytes, data) -> bool:
        return True

    def sync(self) -> None:
        pass


def chunked(sources, progress: Progress | None):
    """Chunk every file of `sources` as the server would: (files, chunk ids in
    stream order) with each file's (path, local, size, hash, refs)."""
    import xxhash

    from ..storage.chunking import ChunkWriter

    writer = ChunkWriter(_Ids())  # the same CDC and the same per-file boundaries as a put on the server
    files, starts, sizes = [], [], []
    nbytes = 0
    for src in sources:
        for path, local in walk(src.local, src.dest):
            hasher = xxhash.xxh3_128()
            with open(local, "rb", buffering=0) as f:
                start, size = writer.write_from(f, hasher)
            files.append({"path": path, "local": local, "size": size, "hash": hasher.digest()})
            starts.append(start)
            sizes.append(size)
            nbytes += size
            if progress and len(files) % 1000 == 0:
                progress(len(files), nbytes)
    refs = writer.refs(starts, sizes).to_pylist()
    for f, r in zip(files, refs):
        f["refs"] = r
    return files


def chunk_frames(files: list[dict], wanted: set[bytes]) -> Iterator[bytes]:
    """The frames (8-byte length, bytes) of the `wanted` chunks, rebuilt from
    the local files whose refs cover them, each checked against its id."""
    import xxhash

    pieces: dict[bytes, list] = {}
    for f in files:
        at = 0
        for ref in f["refs"]:
            if ref["chunk"] in wanted:
                pieces.setdefault(ref["chunk"], []).append((ref["offset"], f["local"], at, ref["length"]))
            at += ref["length"]
    for oid, parts in pieces.items():
        parts.sort()
        data = bytearray()
        for _, local, at, n in parts:
            with open(local, "rb") as fh:
                fh.seek(at)
                data += fh.read(n)
        if xxhash.xxh3_128_digest(data) != oid:
            from ..storage.errors import DplError

            raise DplError(f"{parts[0][1]} changed while it was uploaded; nothing was committed.", hint="Put it again once it is written.")
        yield len(data).to_bytes(8, "big") + bytes(data)


def negotiable(sources) -> bool:
    """Every source is a local file or directory (stdin is sent as it is read)."""
    return all(src.local != "-" and os.path.exists(src.local) for src in sources)
