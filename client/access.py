"""What dpl:// reaches: the store a URL names, ranged reads of one file,
and writes landed as commits.  (client/fsspec.py is the fsspec face over it.)

A `Door` is one store, embedded or remote, opened once per process.  Both
doors offer the Store's interface; they differ only in how a byte range of
a file is read: the embedded store reads just the chunks the range
overlaps (`ChunkRange`), the server is asked for the range (`HttpRange`)
and reads just those chunks itself.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import mmap
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from ..storage import errors as storage_errors
from ..storage.chunkstore import object_id
from ..storage.errors import Conflict, Corruption, DplError


class NotFound(storage_errors.FileNotFound, FileNotFoundError):
    """A repo, ref or path that is not there: a dpl error (sentence and hint)
    that is also the FileNotFoundError fsspec's callers (pandas, pyarrow,
    `fs.exists`) expect."""

    def __init__(self, message: str, hint: str | None, name: str):
        super().__init__(message, hint)
        self.errno, self.filename = errno.ENOENT, name


MISSING = (storage_errors.FileNotFound, storage_errors.RepoNotFound, storage_errors.BranchNotFound, storage_errors.CommitNotFound)


@contextmanager
def found(name: str):
    """Turn dpl's "not there" refusals into `NotFound`, naming `name` (the fsspec path)."""
    try:
        yield
    except NotFound:
        raise
    except MISSING as e:
        raise NotFound(e.message, e.hint, name) from None


class Door:
    """One store, embedded or remote, and the one read each does its own way."""

    def __init__(self, store):
        self.store = store

    def reader(self, repo: str, ref: str | None, path: str) -> "Range":
        raise NotImplementedError


class Embedded(Door):
    def reader(self, repo, ref, path):
        commit = self.store.resolve_commit(repo, ref)
        try:
            row = self.store.file_row(repo, commit.id, path)
        except storage_errors.FileNotFound:
            self.store.file_row(repo, ref, path)  # the same refusal, worded with the ref the user wrote
            raise
        return ChunkRange(self.store, commit.id, row)


class Remote(Door):
    def reader(self, repo, ref, path):
        row = self.store.file_row(repo, ref, path)  # names the commit it was read from
        return HttpRange(self.store, repo, row)


class Range:
    """Bytes [start, end) of one file of one commit."""

    commit: str
    size: int
    hash: str

    def fetch(self, start: int, end: int) -> bytes:
        raise NotImplementedError


class ChunkRange(Range):
    """Reads only the chunks a range overlaps, each verified against its id.

    A chunk the store keeps in a local file (the local store, or a remote
    one's read cache) is memory-mapped and verified once per process
    (`Verified`): a read then costs one copy out of the page cache, not a
    read into a new buffer and a second copy into the answer.  Others go
    through the Files component's `chunk_slice`, which keeps the last few."""

    def __init__(self, store, commit: str, row: dict):
        self.files, self.chunks = store.files, store.chunks
        self.commit, self.size, self.hash = commit, row["size"], row["hash"].hex()
        self.refs = row["refs"]
        self.starts, pos = [], 0
        for ref in self.refs:
            self.starts.append(pos)
            pos += ref["length"]

    def fetch(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, end)  # refs [first, last) overlap the range
        if last - first > 1:
            self.chunks.prefetch([r["chunk"] for r in self.refs[first:last]])  # a remote chunk store downloads them side by side
        pieces = []
        for i in range(first, last):
            at = self.starts[i]
            view = self.piece(i)
            pieces.append(view[max(0, start - at) : end - at])
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    def piece(self, i: int) -> memoryview:
        """The verified bytes of ref `i` (a view; no copy when the chunk is mapped)."""
        ref = self.refs[i]
        mapped = verified(self.chunks, ref["chunk"])
        if mapped is not None:
            return mapped.view[ref["offset"] : ref["offset"] + ref["length"]]
        return self.files.chunk_slice(ref)


class Mapped:
    """A chunk's local file, mapped and checked against its id: `view` is
    its bytes, `address` where they start (for ctypes.memmove).  The mapping
    lives as long as the object: whoever copies from `address` holds it."""

    __slots__ = ("view", "address", "_cell", "_map")

    def __init__(self, path: str, oid: bytes):
        with open(path, "rb") as f:
            # ACCESS_COPY (a private mapping, never written) because ctypes
            # takes the address only of a writable buffer.
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self.view = memoryview(self._map)
        if object_id(self.view) != oid:
            raise Corruption(f"Chunk {oid.hex()} is damaged (its bytes no longer match its hash).", hint="Run `dpl fsck`.")
        self._cell = ctypes.c_char.from_buffer(self._map)
        self.address = ctypes.addressof(self._cell)


class _Verified:
    """The chunks mapped and verified by this process, the most recent kept
    (chunks never change: a copy checked once stays right)."""

    KEEP = 64  # about 64 MiB of mappings: the read-ahead of a few open files

    def __init__(self):
        self.lock = threading.Lock()
        self.maps: OrderedDict[bytes, Mapped] = OrderedDict()

    def get(self, chunks, oid: bytes) -> Mapped | None:
        with self.lock:
            mapped = self.maps.get(oid)
            if mapped is not None:
                self.maps.move_to_end(oid)
                return mapped
        path = chunks.local_path(oid)
        if path is None:
            return None
        try:
            mapped = Mapped(path, oid)
        except (FileNotFoundError, ValueError):  # ValueError: an empty file cannot be mapped
            return None  # chunk_slice says what is wrong with it
        with self.lock:
            self.maps[oid] = mapped
            while len(self.maps) > self.KEEP:
                self.maps.popitem(last=False)  # unmapped when its last reader lets go
        return mapped


def verified(chunks, oid: bytes) -> Mapped | None:
    """The chunk mapped from its local file and verified, or None when the store keeps no local file of it."""
    return _verified.get(chunks, oid)


_verified = _Verified()


class HttpRange(Range):
    """A Range request per read; the server reads only the chunks it overlaps."""

    def __init__(self, store, repo: str, row: dict):
        self.store, self.repo, self.path = store, repo, row["path"]
        self.commit, self.size, self.hash = row["commit"], row["size"], row["hash"]

    def fetch(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        return self.store.read_file(self.repo, self.commit, self.path, start=start, end=end)


class ReadAhead:
    """A Range read front to back gets its next piece fetched in a thread
    while the caller works on this one (DuckDB parses a CSV buffer while the
    next one is read and verified).  Only a read that starts where the last
    one ended starts a read-ahead, so a Parquet reader's jumps fetch what
    they ask and no more."""

    SMALLEST, LARGEST = 1 << 20, 64 << 20

    def __init__(self, rng: Range):
        self.rng, self.size = rng, rng.size
        self.lock = threading.Lock()
        self.buffer, self.buffer_at = b"", 0  # the last piece read ahead
        self.pending = None  # (start, end, future) of the piece being read ahead
        self.last_end = 0  # a first read from the start is taken for the start of a front-to-back read

    def fetch(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        with self.lock:
            sequential = start == self.last_end
            self.last_end = end
            if self.pending and self.pending[0] <= start < self.pending[1]:
                self.buffer, self.buffer_at = self.pending[2].result(), self.pending[0]
                self.pending = None
            have = self.buffer_at <= start < self.buffer_at + len(self.buffer)
            if not have and self.pending:  # a jump elsewhere: what was read ahead is not wanted
                self.pending = None
            if have and start == self.buffer_at and end - start == len(self.buffer):
                data = self.buffer  # the piece asked for, as read ahead: no copy
            elif have:
                head = self.buffer[start - self.buffer_at : end - self.buffer_at]
                data = head if start + len(head) >= end else head + self.rng.fetch(start + len(head), end)
            else:
                data = self.rng.fetch(start, end)
            if (sequential or have) and self.pending is None:
                at = max(end, self.buffer_at + len(self.buffer)) if have else end
                if at < self.size:
                    # as much as was asked (readers ask in pieces of one size), so the next read takes it whole
                    span = min(self.LARGEST, max(self.SMALLEST, end - start))
                    stop = min(self.size, at + span)
                    self.pending = (at, stop, _readers().submit(self.rng.fetch, at, stop))
            return data


_read_pool = None


def _readers():
    """The threads that read ahead, shared by every open file of the process."""
    global _read_pool
    with _doors_lock:
        if _read_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _read_pool = ThreadPoolExecutor(4, thread_name_prefix="dpl-read-ahead")
        return _read_pool


_doors: dict[tuple, Door] = {}
_doors_lock = threading.Lock()


def open_door(target: tuple, token: str | None) -> Door:
    """One door per store per process, shared by every filesystem instance
    (fsspec makes one per thread) and closed only with the process."""
    with _doors_lock:
        door = _doors.get(target)
        if door is None:
            kind, where = target[:2]
            if kind == "address":
                from .remote import RemoteStore

                door = Remote(RemoteStore(where, token=token))
            else:
                from ..engine import Store

                door = Embedded(Store.open(where))
            _doors[target] = door
        return door


# ------------------------------------------------------------------ writes


@dataclass
class Put:
    door: Door
    repo: str
    branch: str
    path: str
    local: str  # the spooled bytes
    append: bool = False
    done: bool = False

    def discard(self) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.local)


@dataclass
class Delete:
    door: Door
    repo: str
    branch: str
    paths: list[str] = field(default_factory=list)
    done: bool = False

    def discard(self) -> None:
        pass


def land(ops: list, description: str | None = None) -> list:
    """Make `ops` real: one commit per (store, repo, branch), in the order given.

    Plain writes are one put (the engine's one commit); deletes and appends
    beside them go into a commit opened for the purpose and finished at the
    end, so the branch never shows half of them.  A branch that already has
    an open commit (`dpl start-commit`) gets the writes into it, as
    put-file does, and keeps it open.
    """
    groups: dict[tuple, list] = {}
    for op in ops:
        if not op.done:
            groups.setdefault((id(op.door), op.repo, op.branch), []).append(op)
    landed = []
    for group in groups.values():
        landed.append(_land_group(group, description))
        for op in group:
            op.done = True
    return landed


def _land_group(ops: list, description: str | None):
    from ..engine.sources import Source

    first = ops[0]
    store, repo, branch = first.door.store, first.repo, first.branch
    puts = sum(isinstance(op, Put) for op in ops)
    deletes = sum(len(op.paths) for op in ops if isinstance(op, Delete))
    text = description if description is not None else _describe(ops, puts, deletes)
    if all(isinstance(op, Put) and not op.append for op in ops):
        latest = {op.path: op for op in ops}  # the last write of a path wins
        return store.put_files(repo, branch, [Source(op.local, op.path) for op in latest.values()], description=text)
    try:
        commit, ours = store.start_commit(repo, branch, text), True
    except Conflict:
        commit, ours = None, False  # the branch's open commit takes them
    try:
        for run in _runs(ops):
            if isinstance(run[0], Delete):
                store.delete_files(repo, branch, [p for op in run for p in op.paths])
            else:
                latest = {op.path: op for op in run}
                store.put_files(repo, branch, [Source(op.local, op.path) for op in latest.values()], append=run[0].append)
        return store.finish_commit(repo, commit.id) if ours else None
    except BaseException:
        if ours:  # nothing of a failed transaction stays, not even an open commit
            with suppress(DplError):
                store.delete_commit(repo, commit.id)
        raise


def _runs(ops: list) -> list[list]:
    """Consecutive ops of one kind (deletes, writes, appends), each done in one call."""
    runs: list[list] = []
    for op in ops:
        kind = (type(op), getattr(op, "append", None))
        if runs and (type(runs[-1][0]), getattr(runs[-1][0], "append", None)) == kind:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _describe(ops: list, puts: int, deletes: int) -> str:
    if puts + deletes == 1:
        return f"dpl://: {'wrote' if puts else 'deleted'} {ops[0].path if puts else ops[0].paths[0]}"
    said = [f"{puts} file(s) written"] if puts else []
    return "dpl://: " + ", ".join(said + ([f"{deletes} path(s) deleted"] if deletes else []))
