"""The embedded default chunk store: one file per object in a local directory.

Objects fan out as `objects/ab/cdef...` (`chunkstore.fanout`) so that no
directory grows past a few thousand entries.  A write goes to a temporary
file and is renamed into place, so a reader never sees half an object and a
killed writer leaves at most a stray temporary file (removed by `gc`).

Durability: the engine calls `sync()` before it records a commit that
refers to new objects, which orders "bytes on disk" before "commit visible".
`sync()` flushes exactly the objects this store object wrote or reused since
the last one, and the fan-out directories their names went into.  (It used
to be one `syncfs`, which flushes every dirty byte of the whole disk: on a
busy machine a 1-file commit then waited for other programs' gigabytes.)
The writes were already started in the background (`_start_writeback`), so
a big put finds little left to flush, and the journal commit the first
flush forces carries the metadata of all of them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
from typing import Iterator

from . import pids
from .chunkstore import ChunkStore, fanout, unfan
from .errors import Corruption, DiskFull, StoreNotFound

SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _flushers():
    """Threads that flush objects side by side (imported on the first flush:
    a command that writes nothing does not import concurrent.futures)."""
    from .pool import DaemonPool

    return DaemonPool(8, "dpl-flush")


@functools.cache
def _sync_file_range():
    """libc's sync_file_range, looked up on the first durable put, not at
    import: ctypes and `find_library` (which runs `ldconfig`) cost a few ms
    that every command importing the store would pay."""
    import ctypes

    fn = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)  # libc is in the process already
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


# An object smaller than this is not worth a head start: its flush is one
# page or a few, and the call costs a ctypes trip on every small commit.
WRITEBACK_FROM = 64 << 10


def _start_writeback(fd: int) -> None:
    """Start writing a new object's pages to disk now, without waiting.

    Not a durability step (the flush in `sync()` before a commit is): it
    lets the disk work while the rest of the put is still being cut and
    hashed, so that the flush finds little left to do (a 2 GiB put otherwise
    flushes it all at the end)."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


class LocalChunkStore(ChunkStore):
    tells_ages = True
    refreshes_age_on_reuse = True  # put() touches an object it finds

    def __init__(self, root: str, *, durable: bool = True):
        self.root = root
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        self.trash = os.path.join(root, "trash")
        self.durable = durable
        # Objects (and their directories) to flush before the next commit
        # refers to them; several writer threads may share this store object.
        self._unsynced: set[str] = set()
        self._unsynced_lock = threading.Lock()
        # One flush at a time: a sync that finds the set empty must not
        # return while another thread is still flushing what it took from it.
        self._sync_lock = threading.Lock()
        self._recorders: list[list[bytes]] = []
        self._recorders_lock = threading.Lock()  # puts come from writer threads

    @classmethod
    def create(cls, root: str, **kw) -> "LocalChunkStore":
        for i in range(256):
            os.makedirs(os.path.join(root, "objects", f"{i:02x}"), exist_ok=True)
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
        return cls(root, **kw)

    @classmethod
    def from_url(cls, url: str, *, root: str, options: dict, create: bool = False) -> "LocalChunkStore":
        """`local` is `chunks/` inside the store directory `root` (the embedded
        default); `file:///DIR` or a plain absolute path is a directory elsewhere
        (a shared disk, say), which several stores may use."""
        if url == "local":
            path = os.path.join(root, "chunks")
        else:
            path = url[len("file://") :] if url.startswith("file://") else url
            if not os.path.isabs(path):
                raise StoreNotFound(f"The chunk directory {path!r} is not an absolute path.", hint="Write file:///DIR or /DIR.")
        durable = options.get("durable", True)
        if create:
            return cls.create(path, durable=durable)
        if url != "local" and not os.path.isdir(os.path.join(path, "objects")):
            raise StoreNotFound(f"The chunk directory {path} holds no chunk store.", hint="Check the path (or the disk it is on is mounted).")
        return cls(path, durable=durable)

    def _path(self, oid: bytes) -> str:
        return os.path.join(self.objects, fanout(oid))

    def put(self, oid: bytes, data) -> bool:
        path = self._path(oid)
        try:
            # An object already there is reused, and its mtime refreshed: `gc`
            # spares objects touched after it started, so a writer that is
            # about to refer to an old unreferenced object keeps it alive.
            # One of the wrong size (truncated) is damaged: it is written again.
            if os.stat(path).st_size == memoryview(data).nbytes:
                os.utime(path)
                # Another writer may have made it and not flushed it yet: our
                # commit will refer to it, so it is flushed with ours.
                self._unsynced_add(path)
                return False
        except FileNotFoundError:
            pass
        except PermissionError:
            return False  # another user's object: there, but not ours to touch
        tmp = os.path.join(self.tmp, f"{oid.hex()}.{os.getpid()}.{threading.get_ident()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        except OSError as e:
            raise _disk_full(e) from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException as e:
            os.close(fd)
            os.unlink(tmp)  # a full disk must not keep the half-written object's space
            if isinstance(e, OSError):
                raise _disk_full(e) from None
            raise
        if self.durable and len(data) >= WRITEBACK_FROM:
            _start_writeback(fd)
        os.close(fd)
        os.rename(tmp, path)
        self._unsynced_add(path)
        with self._recorders_lock:
            for created in self._recorders:
                created.append(oid)
        return True

    @contextlib.contextmanager
    def recording(self):
        """Collect the ids of the objects this store object creates meanwhile
        (so that a write that fails can take back what it stored)."""
        created: list[bytes] = []
        with self._recorders_lock:
            self._recorders.append(created)
        try:
            yield created
        finally:
            # By identity: two recorders with equal contents (two empty lists,
            # from two threads) are still two recorders.
            with self._recorders_lock:
                self._recorders[:] = [r for r in self._recorders if r is not created]

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
                oid = unfan(f"{fan}/{name}")
                if oid is not None:
                    yield oid

    def local_path(self, oid: bytes) -> str:
        return self._path(oid)

    # ------------------------------------------------ capabilities for gc

    def ages(self) -> Iterator[tuple[bytes, float, int]]:
        """(id, mtime, size) of every stored object."""
        for fan in sorted(os.listdir(self.objects)):
            with os.scandir(os.path.join(self.objects, fan)) as entries:
                for e in entries:
                    oid = unfan(f"{fan}/{e.name}")
                    if oid is not None:
                        try:
                            st = e.stat()
                        except FileNotFoundError:
                            continue
                        yield oid, st.st_mtime, st.st_size

    def delete_if_older(self, oid: bytes, cutoff: float) -> int | None:
        """Delete an object unless it was touched at or after `cutoff`; return
        the bytes freed, or None if it was kept.

        The object is first renamed away, then its mtime is read again: a
        writer that reused it (`put` refreshes the mtime) before the rename is
        seen and the object is put back; one that comes after the rename finds
        it missing and writes it anew.  So a concurrent writer never ends up
        referring to a deleted object.
        """
        path = self._path(oid)
        trash = os.path.join(self.trash, f"{oid.hex()}.{os.getpid()}")
        os.makedirs(self.trash, exist_ok=True)
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        st = os.stat(trash)
        if st.st_mtime >= cutoff:
            try:
                os.link(trash, path)  # never over a copy a writer just made
            except FileExistsError:
                pass
            os.unlink(trash)
            return None
        os.unlink(trash)
        return st.st_size

    def restore_trash(self) -> int:
        """Put back objects a killed `gc` left renamed away; return how many."""
        restored = 0
        for name in os.listdir(self.trash) if os.path.isdir(self.trash) else []:
            oid_hex, _, pid = name.partition(".")
            if pid.isdigit() and pids.alive(pid):
                continue  # a running gc's: it decides
            src = os.path.join(self.trash, name)
            oid = bytes.fromhex(oid_hex)
            try:
                os.link(src, self._path(oid))
                restored += 1
            except FileExistsError:
                pass
            os.unlink(src)
        return restored

    def _unsynced_add(self, path: str) -> None:
        if self.durable:
            with self._unsynced_lock:
                self._unsynced.add(path)

    def sync(self) -> None:
        """Make every object put since the last sync durable: its bytes
        (fdatasync: an mtime refreshed on reuse need not be) and its name
        (an fsync of the fan-out directory it was renamed into)."""
        if not self.durable:
            return
        with self._sync_lock:
            with self._unsynced_lock:
                paths, self._unsynced = self._unsynced, set()
            if not paths:
                return
            work = [(p, os.O_RDONLY, os.fdatasync) for p in sorted(paths)]
            work += [(d, os.O_RDONLY | os.O_DIRECTORY, os.fsync) for d in sorted({os.path.dirname(p) for p in paths})]
            try:
                # All at once: the file system commits its journal once for
                # flushes that wait together, where one after another each
                # waits for a journal commit of its own (~1 ms, far more on
                # a busy disk).
                others = [_flushers().submit(_flush, *w) for w in work[1:]]
                _flush(*work[0])
                for done in others:
                    done.result()
            except BaseException:
                with self._unsynced_lock:
                    self._unsynced |= paths  # not durable yet: the next sync tries again
                raise


def _flush(path: str, flags: int, how) -> None:
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return  # deleted since (gc): nothing of it to make durable
    try:
        how(fd)
    except OSError as e:
        raise _disk_full(e) from None
    finally:
        os.close(fd)


def _disk_full(e: OSError) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull()
    return e
