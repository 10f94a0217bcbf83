"""Moving file bytes between this machine and a server, streamed both ways.

An upload is one request: a single file goes as its raw bytes, anything
else (directories, several sources) as a tar stream written by a thread
into a pipe while httpx reads the other end, so no file is held in memory
and the server lands the whole put as one commit.  (The next slice replaces
this with chunk negotiation: only chunks the server lacks travel.)
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
