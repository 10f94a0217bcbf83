"""Files: putting local files into a commit, and reading commits back.

A write streams every source file through one `ChunkWriter`, collects the
file rows in plain arrays (so a million files cost a few hundred bytes each,
not a Python object graph), and lands them as one index layer: either a new
commit on the branch or, when the branch has an open commit, one more layer
of that commit.  Nothing becomes visible until the metadata transaction that
moves the branch head, so a killed writer leaves only unreferenced chunks.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from array import array
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .commits import pc_sum
from .gc import cleans_up_after_disk_full
from .writers import writes_objects
from ..storage import chunkstore, index
from ..storage.chunking import ChunkWriter, int_array
from ..storage.chunkstore import object_id
from ..storage.errors import Conflict, Corruption, FileNotFound, InvalidPath, SourceNotFound
from ..storage.local import LocalChunkStore
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import repos as repo_rows
from ..storage.paths import normalize_path

SMALL = 1 << 16  # files below this are read in one call and deduplicated by hash
PREFETCH = 16  # chunks of a big file fetched ahead of the one being written
READ_AHEAD = 4  # chunks read and verified ahead of the one being written
Progress = Callable[[int, int], None]  # (files done, bytes done)


@dataclass(frozen=True)
class Source:
    """One thing to put: a local path (file or directory) or `-` for stdin."""

    local: str
    dest: str  # repo path of the file, or of the directory the tree lands in


def plan_sources(dest: str | None, sources: list[str], *, recursive: bool) -> list[Source]:
    """Where each source lands, following `cp` conventions.

    One file and a destination path: the file is stored at that path (or
    inside it when it ends in `/`).  One directory: its contents land under
    the destination (default the root).  Several sources: each lands under
    the destination by its base name.
    """
    if not sources:
        raise SourceNotFound("No source was given.", hint="Give a file, a directory with -r, or - for stdin.")
    plans = []
    for src in sources:
        if src == "-":
            if dest is None or dest.endswith("/") or dest == "/":
                raise InvalidPath("Reading stdin needs a file path to store it at.", hint="Write REPO@BRANCH:/path/file -")
            plans.append(Source("-", normalize_path(dest)))
            continue
        try:
            mode = os.stat(src).st_mode
        except FileNotFoundError:
            raise SourceNotFound(f"Source {src!r} does not exist.") from None
        except PermissionError:
            raise SourceNotFound(f"Source {src!r} cannot be read (permission denied).") from None
        if stat.S_ISDIR(mode) and not recursive:
            raise SourceNotFound(f"Source {src!r} is a directory.", hint="Pass -r to put a directory recursively.")
        base = os.path.basename(os.path.normpath(src))
        if stat.S_ISDIR(mode):
            target = dest or "/"
            if len(sources) > 1:
                target = target.rstrip("/") + "/" + base
            plans.append(Source(src, normalize_path(target, allow_root=True)))
        elif dest is None or dest.endswith("/") or dest == "/" or len(sources) > 1:
            plans.append(Source(src, normalize_path((dest or "/").rstrip("/") + "/" + base)))
        else:
            plans.append(Source(src, normalize_path(dest)))
    return plans


def _walk(src: Source) -> Iterator[tuple[str, str]]:
    """(repo path, local path) of every file a source holds, directories expanded."""
    if src.local == "-" or not os.path.isdir(src.local):
        yield src.dest, src.local
        return
    prefix = "" if src.dest == "/" else src.dest
    root_len = len(os.path.join(src.local, ""))
    for dirpath, dirnames, filenames in os.walk(src.local):
        dirnames.sort()
        rel = dirpath[root_len:]
        base = f"{prefix}/{rel}/" if rel else f"{prefix}/"
        for name in filenames:
            yield base + name, os.path.join(dirpath, name)


class _Batch:
    """The rows of one write, in compact arrays.

    Paths go into Arrow arrays a block at a time (UTF-8, about half the
    memory of Python strings): a million files cost a few hundred bytes each.
    """

    BLOCK_ROWS = 1 << 16

    def __init__(self):
        self.path_blocks: list[pa.Array] = []
        self.paths: list[str] = []  # the current block
        self.count = 0
        self.sizes = array("q")
        self.starts = array("q")
        self.hashes: list[bytes] = []
        self.bytes = 0

    def add(self, path: str, size: int, start: int, digest: bytes) -> None:
        self.paths.append(path)
        if len(self.paths) >= self.BLOCK_ROWS:
            self._flush()
        self.count += 1
        self.sizes.append(size)
        self.starts.append(start)
        self.hashes.append(digest)
        self.bytes += size

    def _flush(self) -> None:
        try:
            self.path_blocks.append(pa.array(self.paths, pa.string()))
        except (UnicodeEncodeError, pa.ArrowInvalid):
            bad = next(p for p in self.paths if not _is_utf8(p))
            raise InvalidPath(f"File name {bad.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8.", hint="Rename it.") from None
        self.paths = []

    def sorted_columns(self, writer: ChunkWriter) -> tuple:
        """(paths, sizes, hashes, refs), sorted by path when the paths are unique.

        Sorting the small per-file arrays before the chunk references are
        built means the big table is built in order, never copied by a sort.
        """
        import numpy as np

        self._flush()
        paths = pa.chunked_array(self.path_blocks, pa.string())
        self.path_blocks = []
        sizes = np.frombuffer(self.sizes, dtype=np.int64) if self.count else np.zeros(0, np.int64)
        starts = np.frombuffer(self.starts, dtype=np.int64) if self.count else np.zeros(0, np.int64)
        hashes = pa.array(self.hashes, pa.binary(16))
        self.hashes = []
        if self.count > 1:
            order = pc.sort_indices(paths)
            in_order = paths.take(order)
            if index.is_sorted_unique(in_order):
                at = order.to_numpy()
                paths, sizes, starts, hashes = in_order, sizes[at], starts[at], hashes.take(order)
        return paths, int_array(sizes), hashes, writer.refs(starts, sizes)


class FileOps:
    """Mixed into `Store`: needs `self.db`, `self.chunks` and `RepoOps`."""

    # ----------------------------------------------------------------- write

    @writes_objects
    @cleans_up_after_disk_full
    def put_files(
        self,
        repo: str,
        branch: str,
        sources: list[Source],
        *,
        append: bool = False,
        description: str = "",
        progress: Progress | None = None,
    ):
        self._repo_row(repo)
        writer = ChunkWriter(self.chunks)
        batch = _Batch()
        seen: dict[bytes, int] = {}  # content hash -> stream start, to store duplicates once
        with _Readers() as readers:
            for src in sources:
                for path, local, data in readers.read(_walk(src)):
                    self._put_one(writer, batch, seen, path, local, data)
                    if progress and batch.count % 1000 == 0:
                        progress(batch.count, batch.bytes)
        writer.close()
        seen.clear()
        layer_table = index.make_table(*batch.sorted_columns(writer))
        if progress:
            progress(batch.count, batch.bytes)
        if append:
            return self._write_layer_append(repo, branch, layer_table, description)
        return self._write_layer(repo, branch, layer_table, description)

    @writes_objects
    @cleans_up_after_disk_full
    def put_bytes(self, repo: str, branch: str, files: dict[str, bytes], *, replace: bool = False, description: str = ""):
        """Small files from memory as one commit; `replace` deletes every other
        file in the same commit (the branch then holds exactly `files`)."""
        self._repo_row(repo)
        writer, batch, seen = ChunkWriter(self.chunks), _Batch(), {}
        for path, data in files.items():
            self._put_one(writer, batch, seen, normalize_path(path), "<memory>", data)
        writer.close()
        table = index.make_table(*batch.sorted_columns(writer))
        if replace:
            open_commit = self.open_commit(repo, branch)
            head = self.db.one("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch))
            base = open_commit or (self.get_commit(repo, head["head"]) if head and head["head"] else None)
            kept = set(table["path"].to_pylist())
            gone = [p for p in (self.commit_table(base)["path"].to_pylist() if base else []) if p not in kept]
            if gone:
                table = pa.concat_tables([table, index.tombstones(gone)]).sort_by("path")
        return self._write_layer(repo, branch, table, description)

    def _put_one(self, writer: ChunkWriter, batch: _Batch, seen: dict, path: str, local: str, data) -> None:
        """Add one file; `data` is its bytes when a reader thread already read
        it whole (a small file), None to read it here, or the read's error."""
        if isinstance(data, OSError):
            _source_error(local, data)
        if local == "-":
            start, size, digest = self._stream(writer, sys.stdin.buffer)
        elif data is not None:
            digest = xxhash.xxh3_128_digest(data)
            size = len(data)
            start = seen.get(digest)
            if start is None:
                start = writer.write_whole(data)
                seen[digest] = start
        else:
            try:
                f = open(local, "rb", buffering=0)
            except OSError as e:
                _source_error(local, e)
            with f:
                start, size, digest = self._stream(writer, f)
        batch.add(path, size, start, digest)

    @staticmethod
    def _stream(writer: ChunkWriter, f) -> tuple[int, int, bytes]:
        """A big file (or stdin): read straight into the writer's buffer, hashed on the way."""
        hasher = xxhash.xxh3_128()
        start, size = writer.write_from(f, hasher)
        return start, size, hasher.digest()

    def _write_layer(self, repo: str, branch: str, table: pa.Table, description: str, expect_head=False):
        layer = index.write_layer(self.chunks, table)
        open_commit = self.open_commit(repo, branch)
        if open_commit is not None:
            return self._add_to_open(open_commit, layer)
        return self._land(repo, branch, [layer], description=description, expect_head=expect_head)

    def _add_to_open(self, commit, layer: index.Layer):
        self.chunks.sync()
        delta = commit.delta + [layer]
        with self.db.write() as tx:
            if not commit_rows.add_to_open(tx, commit.repo, commit.id, delta):
                raise Conflict(f"Commit {commit.id} was finished while this write was running.", hint="Run the command again.")
        return self.get_commit(commit.repo, commit.id)

    def _write_layer_append(self, repo: str, branch: str, table: pa.Table, description: str):
        """Appends extend the current version of each file; the write is
        refused (not rebased) if the branch moves meanwhile."""
        open_commit = self.open_commit(repo, branch)
        row = repo_rows.branch(self.db, repo, branch)
        head = row.head if row else None
        if open_commit is not None:
            base = self.commit_table(open_commit)
        elif head is not None:
            base = self.commit_table(self.get_commit(repo, head))
        else:
            base = index.EMPTY
        old = index.lookup([base], table["path"].to_pylist())
        old_rows = {r["path"]: r for r in old.to_pylist()}
        rows = table.to_pylist()
        for row in rows:
            prev = old_rows.get(row["path"])
            if prev is None:
                continue
            hasher = xxhash.xxh3_128()
            for ref in prev["refs"] + row["refs"]:
                hasher.update(self._chunk_slice(ref))
            row["refs"] = prev["refs"] + row["refs"]
            row["size"] = prev["size"] + row["size"]
            row["hash"] = hasher.digest()
        table = pa.Table.from_pylist(rows, schema=index.SCHEMA)
        if open_commit is not None:
            return self._add_to_open(open_commit, index.write_layer(self.chunks, table))
        return self._write_layer(repo, branch, table, description, expect_head=head)

    @writes_objects
    def delete_files(self, repo: str, branch: str, paths: list[str], description: str = ""):
        open_commit = self.open_commit(repo, branch)
        current = self.commit_table(open_commit or self.resolve_commit(repo, branch))
        tombstones = []
        for raw in paths:
            path = normalize_path(raw)
            if index.lookup([current], [path]).num_rows:
                tombstones.append(path)
            elif index.under([current], path).num_rows:
                tombstones.append(path + "/")
            else:
                raise FileNotFound(f"{repo}@{branch}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{branch}`.")
        table = index.tombstones(tombstones)
        return self._write_layer(repo, branch, table, description)

    # ------------------------------------------------------------------ read

    def commit_table(self, commit) -> pa.Table:
        """Every file of a commit (open commits: parent + writes so far)."""
        layers = commit.layers
        if commit.state == "open":
            parent = self.get_commit(commit.repo, commit.parent).layers if commit.parent else []
            layers = parent + commit.delta
        key = (commit.repo, commit.id, tuple(layers))
        cache = self.__dict__.setdefault("_table_cache", {})
        if key not in cache:
            cache.clear()
            cache[key] = index.merge([index.read_layer(self.chunks, l) for l in layers])
        return cache[key]

    def file_table(self, repo: str, ref: str | None) -> tuple[object, pa.Table]:
        commit = self.resolve_commit(repo, ref)
        return commit, self.commit_table(commit)

    def list_files(self, repo: str, ref: str | None, path: str = "/", *, recursive: bool = False) -> pa.Table:
        """Entries under a directory: path, type (file/dir), size, hash (hex)."""
        commit, table = self.file_table(repo, ref)
        path = normalize_path(path, allow_root=True)
        # The table is sorted by path: a file or a directory is found by binary search.
        exact = index.lookup([table], [path]) if path != "/" else table.slice(0, 0)
        if exact.num_rows:
            return _entries(exact)
        prefix = "/" if path == "/" else path + "/"
        sub = index.under([table], prefix) if path != "/" else table
        if sub.num_rows == 0 and path != "/":
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        if recursive:
            return _entries(sub)
        # Direct children: the first path component below the prefix.
        rest = pc.utf8_slice_codeunits(sub["path"], len(prefix))
        first = pc.list_element(pc.split_pattern(rest, "/", max_splits=1), 0)
        is_dir = pc.invert(pc.equal(first, rest))
        grouped = _group_runs(first, sub["size"], is_dir)
        names = pc.binary_join_element_wise(pa.scalar(prefix), grouped["name"], "")
        files = sub.filter(pc.invert(is_dir))
        hashes = files["hash"].take(pc.index_in(names, value_set=files["path"].combine_chunks()))
        return pa.table(
            {
                "path": names,
                "type": pc.if_else(grouped["dir_max"], "dir", "file"),
                "size": grouped["size_sum"],
                "hash": hex_column(hashes),
            }
        )

    def glob_files(self, repo: str, ref: str | None, pattern: str) -> pa.Table:
        from . import globs

        _, table = self.file_table(repo, ref)
        rows = []
        for m in globs.match(table, pattern):
            files = m.files
            is_file = files.num_rows == 1 and files["path"][0].as_py() == m.path
            rows.append(
                {
                    "path": m.path,
                    "type": "file" if is_file else "dir",
                    "size": pc_sum(files["size"]),
                    "hash": files["hash"][0].as_py().hex() if is_file else None,
                }
            )
        return pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA)

    def diff_files(self, repo: str, ref: str | None, other_repo: str | None = None, other_ref: str | None = None) -> pa.Table:
        """added / modified / deleted files from `other` (default: the parent) to `ref`."""
        if other_ref is None and other_repo is None:
            commit = self.resolve_commit(repo, ref)
            if commit.parent is not None:
                return self._diff_from_parent(self.get_commit(repo, commit.parent), commit)
            return diff_tables(index.EMPTY, self.commit_table(commit))
        _, new = self.file_table(repo, ref)
        _, old = self.file_table(other_repo or repo, other_ref)
        return diff_tables(old, new)

    def _diff_from_parent(self, parent, commit) -> pa.Table:
        """A commit is its parent overlaid with its own layers (`delta`), so
        only the paths those layers name can differ: look those up in both
        (binary searches) instead of joining two whole file lists."""
        delta = [index.read_layer(self.chunks, l) for l in commit.delta]
        names = {p for t in delta for p in t["path"].to_pylist()}
        files = [p for p in names if not p.endswith("/")]
        dirs = [p for p in names if p.endswith("/")]

        def touched(layers) -> pa.Table:
            tables = [index.read_layer(self.chunks, l) for l in layers]
            found = pa.concat_tables([index.lookup(tables, files)] + [index.under(tables, d) for d in dirs])
            return index.sort_unique(found.combine_chunks()) if dirs else found

        return diff_tables(touched(parent.layers), touched(commit.layers))

    def read_file(self, repo: str, ref: str | None, path: str) -> bytes:
        out = bytearray()
        for piece in self.file_pieces(repo, ref, path):
            out += piece
        return bytes(out)

    def file_row(self, repo: str, ref: str | None, path: str) -> dict:
        commit, table = self.file_table(repo, ref)
        path = normalize_path(path)
        rows = table.filter(pc.equal(table["path"], path))
        if rows.num_rows == 0:
            if index.under([table], path).num_rows:
                raise FileNotFound(f"{repo}@{ref or 'master'}:{path} is a directory.", hint="Pass -r to get a directory.")
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        return rows.to_pylist()[0]

    def file_pieces(self, repo: str, ref: str | None, path: str) -> Iterator[memoryview]:
        row = self.file_row(repo, ref, path)
        for ref_ in row["refs"]:
            yield self._chunk_slice(ref_)

    def files_under(self, repo: str, ref: str | None, path: str) -> pa.Table:
        _, table = self.file_table(repo, ref)
        return index.under([table], normalize_path(path, allow_root=True))

    def write_file_to(self, row: dict, fd: int) -> None:
        """Write one file's bytes (a row of a file table) to an open descriptor."""
        refs = row["refs"]
        if len(refs) <= 1:
            for ref in refs:
                _write_all(fd, self._chunk_slice(ref))
            return
        # A big file: a thread reads and verifies the next chunks while this
        # one writes (reads and writes release the GIL; the hash is fast).
        # From the local store, a verified chunk is then copied by the kernel
        # (sendfile) from the very page-cache pages that were just checked,
        # instead of being written back from this process's memory.
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        fetch = self._verified_chunk_file if isinstance(self.chunks, LocalChunkStore) else self._chunk_slice
        with ThreadPoolExecutor(1, thread_name_prefix="dpl-get") as pool:
            ahead: deque = deque()
            try:
                for i, ref in enumerate(refs):
                    if i % PREFETCH == 0:  # a remote store downloads the next chunks meanwhile
                        chunkstore.prefetch(self.chunks, [r["chunk"] for r in refs[i : i + 2 * PREFETCH]])
                    ahead.append(pool.submit(fetch, ref))
                    if len(ahead) > READ_AHEAD:
                        _emit(fd, ahead.popleft().result())
                while ahead:
                    _emit(fd, ahead.popleft().result())
            finally:
                for future in ahead:  # an error stopped us: close what was opened ahead
                    if not future.cancel() and future.exception() is None and isinstance(future.result(), _ChunkFile):
                        os.close(future.result().fd)

    def _verified_chunk_file(self, ref: dict) -> "_ChunkFile | memoryview":
        """An open chunk file whose whole content was just checked against
        the chunk's id, and the range of it `ref` needs."""
        chunk = ref["chunk"]
        try:
            src = os.open(self.chunks.local_path(chunk), os.O_RDONLY)
        except FileNotFoundError:
            return self._chunk_slice(ref)  # says which chunk is missing
        try:
            size = os.fstat(src).st_size
            buf = _read_buffer(size)
            with memoryview(buf)[:size] as view:
                got = 0
                while got < size:
                    n = os.readv(src, [view[got:]])
                    if n == 0:
                        break
                    got += n
                if got != size or object_id(view) != chunk:
                    raise Corruption(f"Chunk {chunk.hex()} is damaged (its bytes no longer match its hash).", hint="Run `dpl fsck`.")
        except BaseException:
            os.close(src)
            raise
        return _ChunkFile(src, ref["offset"], ref["length"])

    def export_file(self, row: dict, dest: str) -> str:
        """Write one file to a local path atomically (temp file + rename)."""
        if os.path.isdir(dest):
            dest = os.path.join(dest, row["path"].rsplit("/", 1)[-1])
        tmp = f"{dest}.dpl-tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.write_file_to(row, fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, dest)
        return dest

    def export_dir(self, repo: str, ref: str | None, path: str, dest: str) -> int:
        """Write every file under `path` into the local directory `dest`."""
        files = self.files_under(repo, ref, path)
        if files.num_rows == 0:
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        strip = 0 if path == "/" else len(path.rstrip("/"))
        made: set[str] = set()
        for row in files.to_pylist():
            target = os.path.join(dest, row["path"][strip:].lstrip("/") or os.path.basename(row["path"]))
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            self.export_file(row, target)
        return files.num_rows

    def _chunk_slice(self, ref: dict) -> memoryview:
        """The bytes of one ref, verified against the chunk's id."""
        chunk = ref["chunk"]
        cache = self.__dict__.setdefault("_chunk_cache", {})
        data = cache.get(chunk)
        if data is None:
            data = self.chunks.get(chunk)
            if object_id(data) != chunk:
                raise Corruption(f"Chunk {chunk.hex()} is damaged (its bytes no longer match its hash).", hint="Run `dpl fsck`.")
            if len(cache) > 8:
                cache.clear()
            cache[chunk] = data
        return memoryview(data)[ref["offset"] : ref["offset"] + ref["length"]]


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


@dataclass
class _ChunkFile:
    fd: int  # open on a verified chunk file; closed by _emit
    offset: int
    length: int


def _emit(out: int, piece) -> None:
    """Write a piece of a file: bytes, or a range of a verified chunk file."""
    if not isinstance(piece, _ChunkFile):
        _write_all(out, piece)
        return
    offset, left = piece.offset, piece.length
    try:
        while left:
            try:
                sent = os.sendfile(out, piece.fd, offset, left)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                sent = 0  # e.g. an O_APPEND output: copy through memory instead
            if sent == 0:
                _write_all(out, memoryview(os.pread(piece.fd, left, offset)))
                return
            offset += sent
            left -= sent
    finally:
        os.close(piece.fd)


_buffers = threading.local()


def _read_buffer(size: int) -> bytearray:
    """A buffer reused by each thread that checks chunk files."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(max(size, 4 << 20))
    return buf


def _source_error(local: str, e: OSError):
    if isinstance(e, FileNotFoundError):
        raise SourceNotFound(f"Source {local!r} disappeared while it was being read.") from None
    if isinstance(e, (PermissionError, IsADirectoryError)):
        raise SourceNotFound(f"Source {local!r} cannot be read ({e.strerror}).") from None
    raise e


def _read_small(locals_: list[str]) -> list:
    """Read each file whole if it is small (on a reader thread: open, read and
    close release the GIL).  Per file: its bytes, None if it is big (the
    writer streams it), or the OSError that reading it raised."""
    out = []
    for local in locals_:
        try:
            fd = os.open(local, os.O_RDONLY)
        except OSError as e:
            out.append(e)
            continue
        try:
            data = os.read(fd, SMALL)
            # A short read of a regular file is its end: the common case of a
            # small file costs one open, one read and one close.
            out.append(data if len(data) < SMALL else None)
        except OSError as e:
            out.append(e)
        finally:
            os.close(fd)
    return out


class _Readers:
    """A few threads reading small files ahead of the writer, in order.

    Per-file system calls, not hashing, dominate a tree of small files; done
    on threads they overlap the writer's Python work and each other.
    """

    THREADS = 3
    FILES_PER_TASK = 256
    TASKS_AHEAD = 12  # bounds the bytes read ahead: 12 x 256 small files

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="dpl-read")
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def read(self, files: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str, object]]:
        """(repo path, local path, bytes | None | OSError) of each file, in order."""
        from collections import deque
        from itertools import islice

        pending: deque = deque()

        def submit() -> None:
            task = list(islice(files, self.FILES_PER_TASK))
            if task:
                local = [l for _, l in task]
                if local == ["-"]:
                    pending.append((task, None))
                else:
                    pending.append((task, self.pool.submit(_read_small, local)))

        for _ in range(self.TASKS_AHEAD):
            submit()
        while pending:
            task, future = pending.popleft()
            submit()
            results = future.result() if future is not None else [None]
            for (path, local), data in zip(task, results):
                yield path, local, data


ENTRY_SCHEMA = pa.schema([("path", pa.string()), ("type", pa.string()), ("size", pa.int64()), ("hash", pa.string())])


def _entries(table: pa.Table) -> pa.Table:
    return pa.table(
        {
            "path": table["path"],
            "type": pa.repeat(pa.scalar("file"), table.num_rows),
            "size": table["size"],
            "hash": hex_column(table["hash"]),
        }
    )


def hex_column(hashes) -> pa.Array:
    """Binary hashes as hex strings (nulls stay null), without a Python loop."""
    import binascii
    from array import array

    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    n, width = len(hashes), hashes.type.byte_width
    if n == 0:
        return pa.array([], pa.string())
    data = hashes.buffers()[1]
    text = binascii.hexlify(memoryview(data)[hashes.offset * width : (hashes.offset + n) * width])
    offsets = array("i", range(0, 2 * width * n + 1, 2 * width))
    strings = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))
    if hashes.null_count:
        strings = pc.if_else(pc.is_valid(hashes), strings, pa.scalar(None, pa.string()))
    return strings


def _group_runs(names, sizes, is_dir) -> pa.Table:
    """name, size_sum, dir_max per name, for rows sorted by path.

    Rows under one directory are adjacent, so groups are runs: found by
    comparing neighbours and summed by differences of a running total, with
    no hash aggregation (which would also import Arrow's query engine, a
    visible share of a CLI call).  A file and a directory of the same name
    can be split by a sibling that sorts between them ("a", "a!b", "a/c");
    then the runs repeat a name and a real group-by merges them.
    """
    n = len(names)
    if n == 0:
        return pa.table({"name": pa.array([], pa.string()), "size_sum": pa.array([], pa.int64()), "dir_max": pa.array([], pa.bool_())})
    names = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    new_run = pa.concat_arrays([pa.array([True]), pc.not_equal(names.slice(1), names.slice(0, n - 1))])
    starts = pc.cast(pc.indices_nonzero(new_run), pa.int64())
    run_names = names.take(starts)
    if not index.is_sorted_unique(run_names):
        grouped = (
            pa.table({"name": names, "size": sizes, "dir": is_dir})
            .group_by("name", use_threads=False)
            .aggregate([("size", "sum"), ("dir", "max")])
        )
        return grouped.take(pc.sort_indices(grouped, [("name", "ascending")]))
    ends = pa.concat_arrays([pc.subtract(starts.slice(1), 1), pa.array([n - 1], pa.int64())])

    def run_sums(values):
        total = pc.cumulative_sum(values)
        before = pc.subtract(total.take(starts), values.take(starts))
        return pc.subtract(total.take(ends), before)

    dirs = run_sums(pc.cast(is_dir, pa.int64()))
    return pa.table({"name": run_names, "size_sum": run_sums(sizes), "dir_max": pc.greater(dirs, 0)})


def diff_tables(old: pa.Table, new: pa.Table) -> pa.Table:
    """added / modified / deleted rows from `old` to `new`, sorted by path."""
    old_paths, new_paths = old["path"].combine_chunks(), new["path"].combine_chunks()
    paths = pc.unique(pa.concat_arrays([old_paths, new_paths]))
    at_old = pc.index_in(paths, value_set=old_paths)
    at_new = pc.index_in(paths, value_set=new_paths)
    old_hash, new_hash = old["hash"].take(at_old), new["hash"].take(at_new)
    added = pc.is_null(at_old)
    deleted = pc.is_null(at_new)
    modified = pc.and_(pc.and_(pc.invert(added), pc.invert(deleted)), pc.not_equal(old_hash, new_hash))
    change = pc.if_else(added, "added", pc.if_else(deleted, "deleted", pc.if_else(modified, "modified", None)))
    j = pa.table({"path": paths, "change": change, "old_size": old["size"].take(at_old), "new_size": new["size"].take(at_new)})
    j = j.filter(pc.is_valid(change))
    return j.take(pc.sort_indices(j, [("path", "ascending")]))


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
