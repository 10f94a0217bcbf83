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

(Past 400 lines: the read and write operations of a view share one tree
and one lock, and read more easily side by side than split.)
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import tempfile
import threading
import time

from . import access
from ..storage.errors import DplError

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


class MountRefused(DplError):
    """A mount that cannot be made or asked something (one sentence and a hint)."""


class ReadOnlyMount(MountRefused):
    """A read-only mount asked to commit."""


def _oserror(code: int):
    return fuse.FuseOSError(code)


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


def _columns(rows) -> tuple[list, list]:
    """Paths and sizes of a recursive listing, without a dict per row from an Arrow table."""
    if hasattr(rows, "column"):  # the embedded store answers with Arrow
        return rows.column("path").to_pylist(), rows.column("size").to_pylist()
    rows = list(rows)
    return [r["path"] for r in rows], [r["size"] for r in rows]


class DplMount(_Operations):
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
            else:  # a handle read front to back (cat, cp) gets its next MiB read while the kernel takes this one
                handle = access.ReadAhead(self._range(path))
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
        return handle.fetch(offset, offset + size)

    def release(self, path, fh):
        with self._lock:
            handle = self.handles.pop(fh, None)
            self.writers.pop(fh, None)
        if isinstance(handle, int):
            os.close(handle)
        return 0

    def statfs(self, path):
        return {"f_bsize": 1 << 17, "f_frsize": 1 << 17, "f_namemax": 1024}

    # -------------------------------------------------------------- writing
    # Reached only with --write: a read-only mount is mounted `ro`, so the
    # kernel answers EROFS before asking; `_writable` is the second lock.

    def _writable(self) -> None:
        if not self.branch:
            raise _oserror(errno.EROFS)

    def _copy_up(self, path: str, *, truncate: bool = False) -> str:
        """The local file holding `path`'s bytes, made from the commit's on first write."""
        local = self.local.get(path)
        if local is None:
            fd, local = tempfile.mkstemp(dir=self.spool)
            with os.fdopen(fd, "wb") as out:
                _, size = self.tree.lookup(path)
                if not truncate and size:
                    rng, at = self._range(path), 0
                    while at < size:
                        out.write(rng.fetch(at, at + (4 << 20)))
                        at += 4 << 20
            self.local[path] = local
            self._set(path, -1)
        elif truncate:
            os.truncate(local, 0)
        return local

    def _set(self, path: str, size: int | None) -> None:
        parent, _, name = path.rpartition("/")
        self.tree._mkdirs(parent or "/")[name] = size

    def _parent_dir(self, path: str) -> None:
        parent = path.rpartition("/")[0] or "/"
        if parent not in self.tree.dirs:
            raise _oserror(errno.ENOENT)

    def create(self, path, mode, fi=None):
        with self._lock:
            self._writable()
            self._parent_dir(path)
            if path in self.tree.dirs:
                raise _oserror(errno.EISDIR)
            return self._handle(os.open(self._copy_up(path, truncate=True) if self._exists(path) else self._new(path), os.O_RDWR), path)

    def _exists(self, path: str) -> bool:
        try:
            self.tree.lookup(path)
            return True
        except KeyError:
            return False

    def _new(self, path: str) -> str:
        fd, local = tempfile.mkstemp(dir=self.spool)
        os.close(fd)
        self.local[path] = local
        self._set(path, -1)
        return local

    def write(self, path, data, offset, fh):
        return os.pwrite(self.handles[fh], data, offset)

    def truncate(self, path, length, fh=None):
        with self._lock:
            self._writable()
            if path in self.tree.dirs:
                raise _oserror(errno.EISDIR)
            if not self._exists(path):
                raise _oserror(errno.ENOENT)
            os.truncate(self._copy_up(path, truncate=length == 0), length)
        return 0

    def unlink(self, path):
        with self._lock:
            self._writable()
            if path in self.tree.dirs:
                raise _oserror(errno.EISDIR)
            if not self._exists(path):
                raise _oserror(errno.ENOENT)
            self._drop(path)
            parent, _, name = path.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def _drop(self, path: str) -> None:
        """Forget `path`'s bytes (its open handles keep theirs, as on any filesystem)."""
        local = self.local.pop(path, None)
        if local is not None:
            os.unlink(local)
        if path in self.tree.committed:
            self.deleted.add(path)
        self.ranges.pop(path, None)

    def mkdir(self, path, mode):
        with self._lock:
            self._writable()
            self._parent_dir(path)
            if self._exists(path):
                raise _oserror(errno.EEXIST)
            self.tree._mkdirs(path)
        return 0

    def rmdir(self, path):
        with self._lock:
            self._writable()
            children = self.tree.dirs.get(path)
            if children is None:
                raise _oserror(errno.ENOTDIR if self._exists(path) else errno.ENOENT)
            if children:
                raise _oserror(errno.ENOTEMPTY)
            if path == "/":
                raise _oserror(errno.EBUSY)
            del self.tree.dirs[path]
            parent, _, name = path.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def rename(self, old, new):
        with self._lock:
            self._writable()
            self._parent_dir(new)
            if not self._exists(old):
                raise _oserror(errno.ENOENT)
            if new == old or new.startswith(old + "/"):
                raise _oserror(errno.EINVAL)
            if old in self.tree.dirs:
                if self.tree.dirs.get(new):
                    raise _oserror(errno.ENOTEMPTY)
                if self._exists(new) and new not in self.tree.dirs:
                    raise _oserror(errno.ENOTDIR)
                moves = [(p, new + p[len(old):]) for p in self.tree.files_under(old)]
                empty = [d for d, c in self.tree.dirs.items() if (d == old or d.startswith(old + "/")) and not c]
            else:
                if new in self.tree.dirs:
                    raise _oserror(errno.EISDIR)
                moves, empty = [(old, new)], []
            for src, dst in moves:
                # A file of the commit is copied to a local file first: the
                # chunks are content-addressed, so landing it stores nothing new.
                local = self._copy_up(src)
                del self.local[src]
                if self._exists(dst) and dst not in self.tree.dirs:
                    self._drop(dst)
                self.local[dst] = local
                if src in self.tree.committed:
                    self.deleted.add(src)
                self._set(dst, -1)
                self.ranges.pop(src, None)
            for d in empty:
                self.tree._mkdirs(new + d[len(old):])
            if old in self.tree.dirs:
                for d in [d for d in self.tree.dirs if d == old or d.startswith(old + "/")]:
                    del self.tree.dirs[d]
            parent, _, name = old.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def chmod(self, path, mode):
        return 0  # dpl keeps no modes; accepted so that `cp -p` and editors work

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        handle = self.handles.get(fh)
        if isinstance(handle, int):
            os.fsync(handle)
        return 0

    # ------------------------------------------------------------ landing

    def changes(self) -> tuple[int, int]:
        with self._lock:
            return len(self.local), len(self.deleted - set(self.local))

    def land(self, description: str | None = None, *, reload: bool = True):
        """Land the local changes as one commit on the branch; None when there were none.

        `reload`: show the landed commit afterwards (not when the mount is ending)."""
        with self._lock:
            if not self.branch:
                raise ReadOnlyMount("This mount is read-only, so it has nothing to commit.",
                                   hint="Mount with --write on a branch to change files.")
            if self.writers:
                raise MountRefused(f"{len(self.writers)} file(s) are still open for writing in the mount, so nothing was committed.",
                                   hint="Close them (finish the copy or save in the editor), then commit again.")
            written, gone = dict(self.local), sorted(self.deleted - set(self.local))
            if not written and not gone:
                return None
            ops: list = []
            if gone:
                ops.append(access.Delete(self.door, self.repo, self.branch, gone))
            ops.extend(access.Put(self.door, self.repo, self.branch, p, local) for p, local in sorted(written.items()))
            text = description or self.description or f"dpl mount: {len(written)} file(s) written, {len(gone)} deleted"
            try:
                landed = access.land(ops, text)[0]
            except DplError as e:
                raise MountRefused(f"The mount's changes could not be committed: {e.message}", hint=e.hint) from None
            for local in written.values():
                os.unlink(local)
            if reload:
                self._load(self.branch)
            else:
                self.local, self.deleted = {}, set()
            return landed

    def keep(self) -> str:
        """Write down what the local files are (for changes that could not land); the list's path."""
        import json

        listed = os.path.join(self.spool, "changes.json")
        with open(listed, "w", encoding="utf-8") as f:
            json.dump({"repo": self.repo, "branch": self.branch, "written": self.local,
                       "deleted": sorted(self.deleted - set(self.local))}, f, indent=1)
        return listed

    def close(self) -> None:
        """Drop the local files (after landing, or when there was nothing to land)."""
        if self.spool:
            import shutil

            shutil.rmtree(self.spool, ignore_errors=True)
