"""Files: the component that puts files into commits and reads them back.

A write streams every source file through one `ChunkWriter`, collects the
file rows in plain arrays (so a million files cost a few hundred bytes each,
not a Python object graph), and lands them as one index layer: either a new
commit on the branch or, when the branch has an open commit, one more layer
of that commit.  Nothing becomes visible until the metadata transaction that
moves the branch head, so a killed writer leaves only unreferenced chunks.

Reading lives in engine/reading.py (`FileReader`, which `Files` holds and
answers for), and reading local sources ahead of the writer in
engine/readahead.py; this module holds the writes.
"""

from __future__ import annotations

import os
import sys
from array import array
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from . import fileinfo, uploads
from .commits import Commits
from .gc import cleans_up_after_disk_full
from .listing import diff_tables, group_runs as _group_runs  # noqa: F401  (tests import them from here)
from .readahead import Readers, source_error
from .reading import FileReader
from .repos import Repos
from .sources import Source, plan_sources, walk  # noqa: F401  (callers import Source and plan_sources from here)
from .writers import writes_objects
from ..storage import index
from ..storage.chunking import ChunkWriter, int_array
from ..storage.chunkstore import ChunkStore
from ..storage.errors import Conflict, FileNotFound, InvalidPath, SourceNotFound
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata import transactions as txn_rows
from ..storage.metadata.commits import Commit
from ..storage.metadata.db import Database
from ..storage.paths import normalize_path

Progress = Callable[[int, int], None]  # (files done, bytes done)


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


class Files:
    """Puts, appends and deletes files as commits; reads them through its `FileReader`."""

    def __init__(self, db: Database, chunks: ChunkStore, repos: Repos, commits: Commits, root: Path):
        self.db, self.chunks, self.repos, self.commits = db, chunks, repos, commits
        self.root = root  # where the writers registry lives (`writes_objects`, `cleans_up_after_disk_full`)
        self.reader = FileReader(chunks, repos)

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
    ) -> Commit:
        self.repos.repo(repo)
        self.repos.refuse_output_branch(repo, branch, "put files into")
        writer = ChunkWriter(self.chunks)
        batch = _Batch()
        seen: dict[bytes, int] = {}  # content hash -> stream start, to store duplicates once
        with Readers() as readers:
            for src in sources:
                for path, local, data in readers.read(walk(src)):
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
    def put_bytes(self, repo: str, branch: str, files: dict[str, bytes], *, replace: bool = False, description: str = "") -> Commit:
        """Small files from memory as one commit; `replace` deletes every other
        file in the same commit (the branch then holds exactly `files`)."""
        self.repos.repo(repo)
        self.repos.refuse_output_branch(repo, branch, "put files into")
        if not replace:
            # A few small files (most calls) go in as put-file's do: one chunk and a
            # small layer, no chunker and no Arrow table (about half the CPU of a commit).
            contents = [(normalize_path(path), data) for path, data in files.items()]
            if contents and uploads.is_small(contents) and uploads.lands_alone(self.db, repo, branch):
                return uploads.land_small(self.chunks, self.commits, repo, branch, contents, description=description)
        writer, batch, seen = ChunkWriter(self.chunks), _Batch(), {}
        for path, data in files.items():
            self._put_one(writer, batch, seen, normalize_path(path), "<memory>", data)
        writer.close()
        table = index.make_table(*batch.sorted_columns(writer))
        if replace:
            base = self._base(repo, branch)
            kept = set(table["path"].to_pylist())
            gone = [p for p in (self.reader.commit_table(base)["path"].to_pylist() if base else []) if p not in kept]
            if gone:
                table = pa.concat_tables([table, index.tombstones(gone)]).sort_by("path")
        return self._write_layer(repo, branch, table, description)

    def _put_one(self, writer: ChunkWriter, batch: _Batch, seen: dict, path: str, local: str, data) -> None:
        """Add one file; `data` is its bytes when a reader thread already read
        it whole (a small file), None to read it here, or the read's error."""
        if isinstance(data, OSError):
            source_error(local, data)
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
                source_error(local, e)
            with f:
                start, size, digest = self._stream(writer, f)
        batch.add(path, size, start, digest)

    @staticmethod
    def _stream(writer: ChunkWriter, f) -> tuple[int, int, bytes]:
        """A big file (or stdin): read straight into the writer's buffer, hashed on the way."""
        hasher = xxhash.xxh3_128()
        start, size = writer.write_from(f, hasher)
        return start, size, hasher.digest()

    def _write_layer(self, repo: str, branch: str, table: pa.Table, description: str, expect_head=False) -> Commit:
        layer = index.write_layer(self.chunks, table)
        open_commit = self.repos.open_commit(repo, branch)
        if open_commit is None:
            txn = txn_rows.open_one(self.db)
            if txn is not None:  # a dpl transaction is open: the write joins it (engine/transactions.py)
                open_commit = self.commits.start_commit(repo, branch, f"transaction {txn.id[:12]}", commit_id=txn.id)
        if open_commit is not None:
            return self._add_to_open(open_commit, layer)
        return self.commits.land(repo, branch, [layer], description=description, expect_head=expect_head)

    def _add_to_open(self, commit: Commit, layer: index.Layer) -> Commit:
        self.chunks.sync()
        delta = commit.delta + [layer]
        with self.db.write() as tx:
            if not commit_rows.add_to_open(tx, commit.repo, commit.id, delta):
                raise Conflict(f"Commit {commit.id} was finished while this write was running.", hint="Run the command again.")
        return self.repos.get_commit(commit.repo, commit.id)

    def _write_layer_append(self, repo: str, branch: str, table: pa.Table, description: str) -> Commit:
        """Appends extend the current version of each file; the write is
        refused (not rebased) if the branch moves meanwhile."""
        open_commit = self.repos.open_commit(repo, branch)
        head = self._head(repo, branch)
        base_commit = open_commit or (self.repos.get_commit(repo, head) if head else None)
        base = self.reader.commit_table(base_commit) if base_commit else index.EMPTY
        old = index.lookup([base], table["path"].to_pylist())
        old_rows = {r["path"]: r for r in old.to_pylist()}
        rows = table.to_pylist()
        for row in rows:
            prev = old_rows.get(row["path"])
            if prev is None:
                continue
            hasher = xxhash.xxh3_128()
            for ref in prev["refs"] + row["refs"]:
                hasher.update(self.reader.chunk_slice(ref))
            row["refs"] = prev["refs"] + row["refs"]
            row["size"] = prev["size"] + row["size"]
            row["hash"] = hasher.digest()
        table = pa.Table.from_pylist(rows, schema=index.SCHEMA)
        if open_commit is not None:
            return self._add_to_open(open_commit, index.write_layer(self.chunks, table))
        return self._write_layer(repo, branch, table, description, expect_head=head)

    @writes_objects
    def delete_files(self, repo: str, branch: str, paths: list[str], description: str = "") -> Commit:
        self.repos.refuse_output_branch(repo, branch, "delete files from")
        open_commit = self.repos.open_commit(repo, branch)
        current = self.reader.commit_table(open_commit or self.repos.resolve_commit(repo, branch))
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

    @writes_objects
    def copy_file(self, src_repo: str, src_ref: str | None, src_path: str, dst_repo: str, dst_branch: str,
                  dst_path: str | None = None, description: str = "") -> Commit:
        """Copy a file or directory by reference (engine/fileinfo.py): one small layer, no byte stored again."""
        self.repos.repo(dst_repo)
        self.repos.refuse_output_branch(dst_repo, dst_branch, "copy files into")
        table, src, dest = fileinfo.copied_rows(self.reader, src_repo, src_ref, src_path, dst_path)
        return self._write_layer(dst_repo, dst_branch, table, description or f"copy {src_repo}@{src_ref or 'master'}:{src} to {dest}")

    def inspect_file(self, repo: str, ref: str | None, path: str) -> dict:
        return fileinfo.describe(self.reader, repo, ref, path)

    # ------------------------------------------- uploads that negotiate chunks
    # (engine/uploads.py)

    def missing_chunks(self, ids: list[bytes]) -> list[bytes]:
        return uploads.missing(self.chunks, ids)

    def put_chunk(self, data) -> bytes:
        return uploads.put_chunk(self.chunks, data)

    @writes_objects
    @cleans_up_after_disk_full
    def land_rows(self, repo: str, branch: str, rows: list[dict], *, append: bool = False, description: str = "") -> Commit:
        """Land files from ready-made rows (path, size, hash, refs) whose chunks the store holds, as one commit."""
        self.repos.repo(repo)
        self.repos.refuse_output_branch(repo, branch, "put files into")
        table = uploads.rows_table(self.chunks, self.reader, rows)
        if append:
            return self._write_layer_append(repo, branch, table, description)
        return self._write_layer(repo, branch, table, description)

    def _head(self, repo: str, branch: str) -> str | None:
        """The branch's head, None for a branch with no commit or none at all (a write makes it)."""
        row = repo_rows.branch(self.db, repo, branch)
        return row.head if row else None

    def _base(self, repo: str, branch: str) -> Commit | None:
        """What a write to the branch lands on: its open commit, else its head."""
        head = self._head(repo, branch)
        return self.repos.open_commit(repo, branch) or (self.repos.get_commit(repo, head) if head else None)

    # ------------------------------------------------------------------ read
    # (engine/reading.py)

    def commit_table(self, commit: Commit) -> pa.Table:
        return self.reader.commit_table(commit)

    def file_table(self, repo: str, ref: str | None) -> tuple[Commit, pa.Table]:
        return self.reader.file_table(repo, ref)

    def list_files(self, repo: str, ref: str | None, path: str = "/", *, recursive: bool = False) -> pa.Table:
        return self.reader.list_files(repo, ref, path, recursive=recursive)

    def glob_files(self, repo: str, ref: str | None, pattern: str) -> pa.Table:
        return self.reader.glob_files(repo, ref, pattern)

    def diff_files(self, repo: str, ref: str | None, other_repo: str | None = None, other_ref: str | None = None,
                   path: str = "/") -> pa.Table:
        """What changed between two commits, under `path` (a file or a directory)."""
        return within(self.reader.diff_files(repo, ref, other_repo, other_ref), path)

    def read_file(self, repo: str, ref: str | None, path: str, *, start: int = 0, end: int | None = None) -> bytes:
        """A file's bytes, or the bytes [start, end) of it (as a Range read: only the chunks it overlaps are read)."""
        if not start and end is None:
            return self.reader.read_file(repo, ref, path)
        row = self.file_row(repo, ref, path)
        return b"".join(self.range_pieces(row["refs"], start, row["size"] if end is None else min(end, row["size"])))

    def range_pieces(self, refs, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end) of a file, from its refs, a chunk at a time: chunks outside the range are never read."""
        pos = 0
        for ref in refs:
            n = ref["length"]
            if pos + n > start and pos < end:
                yield bytes(self.reader.chunk_slice(ref)[max(0, start - pos) : min(n, end - pos)])  # verified against its id
            pos += n
            if pos >= end:
                break

    def file_row(self, repo: str, ref: str | None, path: str) -> dict:
        return self.reader.file_row(repo, ref, path)

    def file_pieces(self, repo: str, ref: str | None, path: str) -> Iterator[memoryview]:
        return self.reader.file_pieces(repo, ref, path)

    def files_under(self, repo: str, ref: str | None, path: str) -> pa.Table:
        return self.reader.files_under(repo, ref, path)

    def write_file_to(self, row: dict, fd: int) -> None:
        self.reader.write_file_to(row, fd)

    def export_file(self, row: dict, dest: str) -> str:
        where = os.path.dirname(dest) or "."
        if not os.path.isdir(where):
            # Said here: the write would fail on a temporary name the user never typed.
            raise SourceNotFound(f"Directory {where!r} does not exist, so {dest!r} cannot be written.",
                                 hint=f"Create it first (mkdir -p {where}), or write somewhere else.")
        return self.reader.export_file(row, dest)

    def export_dir(self, repo: str, ref: str | None, path: str, dest: str) -> int:
        return self.reader.export_dir(repo, ref, path, dest)

    def chunk_slice(self, ref: dict) -> memoryview:
        return self.reader.chunk_slice(ref)

    def clear_caches(self) -> None:
        self.reader.clear_caches()


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def within(rows, path: str | None):
    """The rows of a listing or diff (an Arrow table, or dicts) at `path` or beneath it."""
    if not path or path == "/":
        return rows
    path = normalize_path(path)
    if isinstance(rows, list):
        return [r for r in rows if r["path"] == path or r["path"].startswith(path + "/")]
    column = rows["path"]
    return rows.filter(pc.or_(pc.equal(column, path), pc.starts_with(column, path + "/")))
