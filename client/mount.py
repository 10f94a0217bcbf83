"""`dpl mount REPO@REF DIR`: a commit as a directory, through FUSE (mfusepy).

    dpl mount training@master /mnt/training          # read-only, pinned
    dpl mount training@master /mnt/training --write  # changes land as one commit on unmount

A read-only mount shows the commit REF named when it was mounted, whatever
lands on the branch meanwhile: a commit is immutable, so the whole tree is
listed once, from the commit's index in one pass, and every `ls` and `stat`
is answered from memory (the kernel may cache them for as long as it likes).
A read fetches only the chunks it overlaps (client/access.py's ranged reads,
on the embedded store or a server).

With `--write` (on a branch), files written, created, deleted or renamed
are kept in local temporary files and a list of deletions; they land
together as one commit on the branch when the mount ends (Ctrl-C, SIGTERM,
`dpl unmount`) or when `dpl mount --commit DIR` asks (client/mountctl.py).
The changes are applied to the branch's head of that moment, path by path,
as a `put-file` plus `delete-file` would be.

This module is the view (the tree, the reading operations); the changing
operations and the landing are its `WriteBack` half (client/mount_write.py),
and how a handle is read, chunk by chunk, is client/mount_read.py.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from . import access, mount_read
from .mount_write import MountRefused, ReadOnlyMount, WriteBack, _oserror
from ..storage.errors import DplError

__all__ = ["FUSE_MISSING", "DplMount", "MountRefused", "ReadOnlyMount", "Tree"]


def _prefer_fuse3() -> None:
    """mfusepy takes libfuse 2 when both are installed; the listing of attributes
    with names (READDIRPLUS, client/mountctl.py) is libfuse 3's."""
    from ctypes.util import find_library

    if "FUSE_LIBRARY_PATH" not in os.environ and find_library("fuse3"):
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")


try:  # mfusepy loads libfuse when imported; mountctl.require_fuse says what is missing
    _prefer_fuse3()
    import mfusepy as fuse
    _Operations = fuse.Operations
    FUSE_MISSING = None
except (ImportError, OSError, AttributeError) as e:
    fuse, _Operations, FUSE_MISSING = None, object, str(e)


class Tree:
    """The directories of one view: dir path -> {name: size, or None for a
    directory}; a size of -1 marks a file whose bytes are in a local file."""

    def __init__(self, rows) -> None:
        self.dirs: dict[str, dict[str, int | None]] = {"/": {}}
        paths, sizes = _columns(rows)
        self.committed = set(paths)  # what a delete has to remove from the branch
        dirs = self.dirs
        for path, size in zip(paths, sizes):
            parent, _, name = path.rpartition("/")
            parent = parent or "/"
            children = dirs.get(parent)
            if children is None:
                children = self._mkdirs(parent)
            children[name] = size

    def _mkdirs(self, path: str) -> dict:
        """The children of `path`, made (with its ancestors) if new."""
        children = self.dirs.get(path)
        if children is None:
            children = self.dirs[path] = {}
            parent, _, name = path.rpartition("/")
            self._mkdirs(parent or "/")[name] = None
        return children

    def lookup(self, path: str):
        """(kind, size): kind 'dir' or 'file'; KeyError when there is nothing there."""
        if path in self.dirs:
            return "dir", 0
        parent, _, name = path.rpartition("/")
        size = self.dirs[parent or "/"][name]
        return ("dir", 0) if size is None else ("file", size)

    def files_under(self, path: str) -> list[str]:
        out = []
        for d, children in self.dirs.items():
            if d == path or d.startswith(path + "/"):
                out.extend((d.rstrip("/") + "/" + n) for n, s in children.items() if s is not None)
        return out


@contextmanager
def _io_error(path: str):
    """A file whose bytes cannot be read (a damaged or missing chunk) reads as
    EIO; the mount's terminal is told why in one line, not a traceback."""
    try:
        yield
    except DplError as e:
        sys.stderr.write(f"dpl mount: reading {path} failed: {e.message}" + (f" ({e.hint})" if e.hint else "") + "\n")
        raise _oserror(errno.EIO) from None


def _columns(rows) -> tuple[list, list]:
    """Paths and sizes of a recursive listing, without a dict per row from an Arrow table."""
    if hasattr(rows, "column"):  # the embedded store answers with Arrow
        return rows.column("path").to_pylist(), rows.column("size").to_pylist()
    rows = list(rows)
    return [r["path"] for r in rows], [r["size"] for r in rows]


class DplMount(WriteBack, _Operations):
    """The FUSE operations over one view of a repo: pinned commit, or a branch with local changes."""

    use_ns = True
    ready = None  # called with the mount once it is visible
    description: str | None = None  # of the commits it lands

    def __init__(self, door: access.Door, repo: str, ref: str, *, branch: str | None = None) -> None:
        self.door, self.repo, self.branch = door, repo, branch  # branch: only with --write
        self._lock = threading.RLock()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.spool = tempfile.mkdtemp(prefix="dpl-mount-") if branch else None
        self.handles: dict[int, object] = {}  # fh -> an access.Range, or an fd of a local file
        self.writers: dict[int, str] = {}  # fh -> path, for handles open to write
        self.next_fh = 1
        self._load(ref)

    def _load(self, ref: str | None) -> None:
        """The view of `ref` (None: an empty branch), with nothing changed locally."""
        store = self.door.store
        if ref is None:
            self.commit, when, rows = None, time.time(), []
        else:
            commit = store.resolve_commit(self.repo, ref)
            self.commit, when = commit.id, commit.finished or commit.created
            if isinstance(self.door, access.Embedded):
                # The commit's index as it is (list_files would add a type column, at the
                # price of pyarrow importing pandas: a second of a mount's start).
                rows = store.files_under(self.repo, commit.id, "/")
            else:
                rows = store.list_files(self.repo, commit.id, "/", recursive=True)
        self.tree = Tree(rows)
        self.mtime = int(when * 1e9)
        self.ranges: dict[str, access.Range] = {}
        self.local: dict[str, str] = {}  # repo path -> the local file holding its new bytes
        self.deleted: set[str] = set()  # paths of the commit that go
        # The tree is a few objects per file, kept for the mount's life: out of the
        # collector's sight, so that a listing's allocations do not make every
        # collection walk 100,000 names again.
        gc.freeze()

    def init(self, path):
        if self.ready is not None:
            self.ready(self)

    # -------------------------------------------------------------- reading

    def getattr(self, path, fh=None):
        with self._lock:
            try:
                kind, size = self.tree.lookup(path)
            except KeyError:
                raise _oserror(errno.ENOENT) from None
            mtime = self.mtime
            if size == -1:
                st = os.stat(self.local[path])
                size, mtime = st.st_size, st.st_mtime_ns
        writable = 0o200 if self.branch else 0
        if kind == "dir":
            mode, nlink = stat.S_IFDIR | 0o555 | writable, 2
        else:
            mode, nlink = stat.S_IFREG | 0o444 | writable, 1
        return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": self.uid, "st_gid": self.gid,
                "st_mtime": mtime, "st_ctime": mtime, "st_atime": mtime, "st_blksize": 1 << 17,
                "st_blocks": (size + 511) // 512}

    def readdir(self, path, fh):
        with self._lock:
            children = self.tree.dirs.get(path)
            if children is None:
                raise _oserror(errno.ENOTDIR)
            return [".", "..", *children]

    def children(self, path: str) -> list[tuple[str, int | None]]:
        """(name, size) of a directory's entries: None for a directory, -1 for a locally written file."""
        with self._lock:
            children = self.tree.dirs.get(path)
            if children is None:
                raise _oserror(errno.ENOTDIR)
            return list(children.items())

    def open(self, path, flags):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND)
        with self._lock:
            try:
                kind, size = self.tree.lookup(path)
            except KeyError:
                raise _oserror(errno.ENOENT) from None
            if kind == "dir":
                raise _oserror(errno.EISDIR)
            if writing:
                self._writable()
                handle = os.open(self._copy_up(path, truncate=bool(flags & os.O_TRUNC)), os.O_RDWR)
            elif size == -1:
                handle = os.open(self.local[path], os.O_RDONLY)
            else:  # read from the file's chunks, the next ones mapped ahead of a front-to-back read
                handle = mount_read.handle_for(self._range(path), path)
            return self._handle(handle, path if writing else None)

    def _range(self, path: str) -> access.Range:
        rng = self.ranges.get(path)
        if rng is None:
            with access.found(path):
                rng = self.ranges[path] = self.door.reader(self.repo, self.commit, path)
        return rng

    def _handle(self, handle, writer: str | None) -> int:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = handle
        if writer is not None:
            self.writers[fh] = writer
        return fh

    def read(self, path, size, offset, fh):
        handle = self.handles[fh]
        if isinstance(handle, int):
            return os.pread(handle, size, offset)
        with _io_error(path):
            return handle.fetch(offset, offset + size)

    def read_into(self, fh: int, address: int, size: int, offset: int) -> int | None:
        """A read copied straight into libfuse's buffer at `address` (client/mountctl.py's
        FUSE calls it); None when this handle's bytes come as bytes, from `read`."""
        handle = self.handles.get(fh)
        if isinstance(handle, mount_read.ChunkHandle):
            with _io_error(handle.path):
                return handle.read_into(address, size, offset)
        return None

    def release(self, path, fh):
        with self._lock:
            handle = self.handles.pop(fh, None)
            self.writers.pop(fh, None)
        if isinstance(handle, int):
            os.close(handle)
        return 0

    def statfs(self, path):
        return {"f_bsize": 1 << 17, "f_frsize": 1 << 17, "f_namemax": 1024}
