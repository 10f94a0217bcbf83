"""Reading the files of commits: their tables, listings, diffs and bytes.

`FileReader` is the reading half of the `Files` component (engine/files.py),
which holds one and answers for it.  A commit's files are the merge of its
index layers; the last table merged and the last few chunks read are kept,
because a command or a job reads one commit, and a file's pieces in order.
Every chunk is checked against its id as it is read, so damage is reported
(as `Corruption`, pointing at `dpl fsck`) and never passed on.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from .listing import ENTRY_SCHEMA, diff_tables, dir_entries, dir_page, entries
from .repos import Repos
from ..storage import chunkstore, index, localfile
from ..storage.chunkstore import ChunkStore, object_id
from ..storage.errors import Corruption, FileNotFound
from ..storage.local import LocalChunkStore
from ..storage.metadata.commits import Commit
from ..storage.paths import normalize_path

PREFETCH = 16  # chunks of a big file fetched ahead of the one being written
READ_AHEAD = 4  # chunks read and verified ahead of the one being written
CACHED_CHUNKS = 8


class FileReader:
    """Files of commits, read from the chunk store."""

    def __init__(self, chunks: ChunkStore, repos: Repos):
        self.chunks, self.repos = chunks, repos
        # The last commit read: its merged table and a binary search over its
        # paths.  Replaced whole (never cleared then filled), so threads of a
        # server reading at once never see it half-made.
        self._last: tuple[tuple, pa.Table, index.SortedPaths] | None = None
        self._chunk_cache: dict[bytes, bytes] = {}  # the last few verified chunks

    def clear_caches(self) -> None:
        """Drop the cached table and chunks (after a repair rewrote what they came from)."""
        self._last = None
        self._chunk_cache.clear()

    def commit_table(self, commit: Commit) -> pa.Table:
        """Every file of a commit (open commits: parent + writes so far)."""
        return self._merged(commit)[1]

    def _merged(self, commit: Commit) -> tuple[tuple, pa.Table, index.SortedPaths]:
        layers = commit.layers
        if commit.state == "open":
            parent = self.repos.get_commit(commit.repo, commit.parent).layers if commit.parent else []
            layers = parent + commit.delta
        key = (commit.repo, commit.id, tuple(layers))
        last = self._last
        if last is None or last[0] != key:
            table = index.merge([index.read_layer(self.chunks, l) for l in layers])
            last = self._last = (key, table, index.SortedPaths(table["path"]))
        return last

    def file_table(self, repo: str, ref: str | None) -> tuple[Commit, pa.Table]:
        commit = self.repos.resolve_commit(repo, ref)
        return commit, self.commit_table(commit)

    def list_files(self, repo: str, ref: str | None, path: str = "/", *, recursive: bool = False) -> pa.Table:
        """Entries under a directory: path, type (file/dir), size, hash (hex)."""
        rows, prefix = self._rows_at(repo, ref, path)
        return entries(rows) if recursive or prefix is None else dir_entries(rows, prefix)

    def list_page(self, repo: str, ref: str | None, path: str = "/", *, after: str | None = None,
                  limit: int = 50) -> tuple[pa.Table, str | None]:
        """One page of `list_files` (the same entries; a directory sorts as "name/"): up to
        `limit` entries after the key `after`, and the key to pass for the next page (None
        at the end).  It costs the rows of its own entries, not those of the directory."""
        rows, prefix = self._rows_at(repo, ref, path)
        return (entries(rows), None) if prefix is None else dir_page(rows, prefix, after, limit)

    def _rows_at(self, repo: str, ref: str | None, path: str) -> tuple[pa.Table, str | None]:
        """(the file `path` as a one-row table, None), or (every file under the
        directory `path`, its prefix ending in /)."""
        _, table = self.file_table(repo, ref)
        path = normalize_path(path, allow_root=True)
        if path == "/":
            return table, "/"
        # The table is sorted by path: a file or a directory is found by binary search.
        exact = index.lookup([table], [path])
        if exact.num_rows:
            return exact, None
        sub = index.under([table], path + "/")
        if sub.num_rows == 0:
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        return sub, path + "/"

    def glob_files(self, repo: str, ref: str | None, pattern: str) -> pa.Table:
        from . import globs
        from .commits import pc_sum  # here: listing and diffing need none of engine/commits.py

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
            commit = self.repos.resolve_commit(repo, ref)
            if commit.parent is not None:
                return self._diff_from_parent(self.repos.get_commit(repo, commit.parent), commit)
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
        _, table, paths = self._merged(self.repos.resolve_commit(repo, ref))
        path = normalize_path(path)
        # The merged table is sorted and holds no tombstones: one binary search
        # finds the row (a server answers many get-files from one commit).
        i = paths.find(path)
        if i is None:
            if index.under([table], path).num_rows:
                raise FileNotFound(f"{repo}@{ref or 'master'}:{path} is a directory.", hint="Pass -r to get a directory.")
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        return table.slice(i, 1).to_pylist()[0]

    def file_pieces(self, repo: str, ref: str | None, path: str) -> Iterator[memoryview]:
        row = self.file_row(repo, ref, path)
        for ref_ in row["refs"]:
            yield self.chunk_slice(ref_)

    def files_under(self, repo: str, ref: str | None, path: str) -> pa.Table:
        _, table = self.file_table(repo, ref)
        return index.under([table], normalize_path(path, allow_root=True))

    def write_file_to(self, row: dict, fd: int) -> None:
        """Write one file's bytes (a row of a file table) to an open descriptor."""
        refs = row["refs"]
        if len(refs) <= 1:
            for ref in refs:
                _write_all(fd, self.chunk_slice(ref))
            return
        # A big file: a thread reads and verifies the next chunks while this
        # one writes (reads and writes release the GIL; the hash is fast).
        # From the local store, a verified chunk is then copied by the kernel
        # (sendfile) from the very page-cache pages that were just checked,
        # instead of being written back from this process's memory.
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        fetch = self._verified_chunk_file if isinstance(self.chunks, LocalChunkStore) else self.chunk_slice
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
            return self.chunk_slice(ref)  # says which chunk is missing
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
        return localfile.export(dest, row["path"], lambda fd: self.write_file_to(row, fd))

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

    def chunk_slice(self, ref: dict) -> memoryview:
        """The bytes of one ref, verified against the chunk's id."""
        chunk = ref["chunk"]
        cache = self._chunk_cache
        data = cache.get(chunk)
        if data is None:
            data = self.chunks.get(chunk)
            if object_id(data) != chunk:
                raise Corruption(f"Chunk {chunk.hex()} is damaged (its bytes no longer match its hash).", hint="Run `dpl fsck`.")
            if len(cache) > CACHED_CHUNKS:
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
