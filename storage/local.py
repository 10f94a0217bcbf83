"""The embedded default chunk store: one file per object in a local directory.

Objects fan out as `objects/ab/cdef...` (as git and dvc-objects do) so that
no directory grows past a few thousand entries.  A write goes to a temporary
file and is renamed into place, so a reader never sees half an object and a
killed writer leaves at most a stray temporary file (removed by `gc`).

Durability is one `syncfs` per commit instead of one `fsync` per object:
the engine calls `sync()` before it records a commit that refers to new
objects, which orders "bytes on disk" before "commit visible" at the cost of
one flush, not thousands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Iterator

from dpl.storage.errors import Corruption

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class LocalChunkStore:
    def __init__(self, root: str, *, durable: bool = True):
        self.root = root
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        self.durable = durable
        self._dirty = False

    @classmethod
    def create(cls, root: str, **kw) -> "LocalChunkStore":
        for i in range(256):
            os.makedirs(os.path.join(root, "objects", f"{i:02x}"), exist_ok=True)
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
        return cls(root, **kw)

    def _path(self, oid: bytes) -> str:
        h = oid.hex()
        return os.path.join(self.objects, h[:2], h[2:])

    def put(self, oid: bytes, data) -> bool:
        path = self._path(oid)
        if os.path.exists(path):
            return False
        tmp = os.path.join(self.tmp, f"{oid.hex()}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
        self._dirty = True
        return True

    def get(self, oid: bytes) -> bytes:
        try:
            with open(self._path(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise Corruption(f"Object {oid.hex()} is missing from the store.", hint="Run `dpl fsck`.") from None

    def has(self, oid: bytes) -> bool:
        return os.path.exists(self._path(oid))

    def delete(self, oid: bytes) -> None:
        try:
            os.unlink(self._path(oid))
        except FileNotFoundError:
            pass

    def iterate(self) -> Iterator[bytes]:
        for fan in sorted(os.listdir(self.objects)):
            for name in os.listdir(os.path.join(self.objects, fan)):
                if len(name) == 30:
                    yield bytes.fromhex(fan + name)

    def local_path(self, oid: bytes) -> str:
        return self._path(oid)

    def sync(self) -> None:
        if not (self.durable and self._dirty):
            return
        fd = os.open(self.objects, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
        self._dirty = False
