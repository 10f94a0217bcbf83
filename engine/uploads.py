"""Uploads that send only what the store lacks: the server's half.

A client chunks its files with the same CDC as `ChunkWriter` (so the same
bytes give the same chunk ids on both sides), asks which ids are `missing`,
sends those (`put_chunk` names each by its own hash, never by the sender's
word), then lands the files from their rows (`Files.land_rows`, which calls
`rows_table`).  Every file is read back and checked against its size and
hash before it lands, so a client can neither name bytes it does not have
nor give a file a false hash.

Chunks sent but never landed are unreferenced objects, which gc removes as
it removes those of a killed put.

`put_small` is the same idea on one machine: a put of a few small local
files (a 1-file `dpl put-file`, the commonest write of all) needs no chunker
and no Arrow: its bytes are one chunk, and its layer a small one
(storage/smalllayer.py), so it imports neither pyarrow nor numpy.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import xxhash

from . import writers
from ..storage import index, smalllayer
from ..storage.chunkstore import ChunkStore, object_id
from ..storage.errors import DiskFull, DplError, InvalidPath
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import transactions as txn_rows
from ..storage.paths import normalize_path

if TYPE_CHECKING:
    import pyarrow as pa

    from .sources import Source
    from ..storage.metadata.commits import Commit

# A write this small is a single chunk however FastCDC would cut it: its
# smallest chunk is a quarter of the average (storage/chunking.py), and no
# file of it is big enough for chunks of its own.  So the chunk made here is
# the one ChunkWriter makes, and the same bytes dedupe either way.
SMALL_BYTES = (1 << 20) // 4


def missing(chunks: ChunkStore, ids: list[bytes]) -> list[bytes]:
    """The ids of `ids` the chunk store lacks (each once, in order)."""
    return [oid for oid in dict.fromkeys(ids) if not chunks.has(oid)]


def put_chunk(chunks: ChunkStore, data) -> bytes:
    oid = object_id(data)
    chunks.put(oid, data)
    return oid


def rows_table(chunks: ChunkStore, reader, rows: list[dict]) -> "pa.Table":
    """An index layer of `rows` (path, size, hash, refs of chunk/offset/length), each file checked against its bytes."""
    paths, sizes, hashes, refs = [], [], [], []
    for row in rows:
        path = normalize_path(row["path"])
        hasher, size = xxhash.xxh3_128(), 0
        for ref in row["refs"]:
            if not chunks.has(ref["chunk"]):
                raise DplError(f"Chunk {ref['chunk'].hex()} of {path} is not in the store; nothing was committed.",
                               hint="Send the chunks the server lacks first, then land the files again.")
            piece = reader.chunk_slice(ref)
            if ref["offset"] < 0 or ref["length"] < 0 or len(piece) != ref["length"]:
                raise InvalidPath(f"{path}: a chunk reference reaches past its chunk; nothing was committed.", hint="Upload the file again.")
            hasher.update(piece)
            size += ref["length"]
        if size != row["size"] or hasher.digest() != row["hash"]:
            raise InvalidPath(f"{path}: its bytes do not match the size and hash sent with it; nothing was committed.",
                              hint="The file changed while it was uploaded, or the upload was damaged: upload it again.")
        paths.append(path)
        sizes.append(size)
        hashes.append(row["hash"])
        refs.append(row["refs"])
    if len(set(paths)) != len(paths):
        raise InvalidPath("The upload names one path twice; nothing was committed.", hint="Send each file once.")
    return index.make_table(paths, sizes, hashes, refs)


def put_small(store, repo: str, branch: str, sources: list["Source"], *, description: str = "") -> "Commit | None":
    """Put a few small local files as one commit, as `Files.put_files` would,
    without pyarrow; None (and nothing done) when the write is not of that
    kind: a directory, stdin, too many or too big files, or a branch with an
    open commit or an open dpl transaction to join (put_files does those)."""
    files = _small_files(sources)
    if files is None:
        return None
    store.repos.repo(repo)
    store.repos.refuse_output_branch(repo, branch, "put files into")
    if not lands_alone(store.db, repo, branch):
        return None
    contents = []
    for path, local in files:
        try:
            with open(local, "rb") as f:
                contents.append((path, f.read()))
        except OSError as e:
            from .readahead import source_error

            source_error(local, e)
    if not is_small(contents):
        return None  # grown since it was looked at: the chunker's business
    with writers.writing(store), store.chunks.recording() as created:
        try:
            return land_small(store.chunks, store.commits, repo, branch, contents, description=description)
        except DiskFull:
            from .gc import discard_unlanded  # as Files' writes do (gc.cleans_up_after_disk_full)

            discard_unlanded(store, created)
            raise


def is_small(contents: list[tuple[str, bytes]]) -> bool:
    """Whether files in memory make a small write: one chunk, one small layer."""
    return len(contents) <= smalllayer.SMALL_ROWS and sum(len(data) for _, data in contents) <= SMALL_BYTES


def lands_alone(db, repo: str, branch: str) -> bool:
    """Whether a write to `branch` lands as a commit of its own: no open commit
    or open dpl transaction to join (Files' writes join those)."""
    return commit_rows.open_on(db, repo, branch) is None and txn_rows.open_one(db) is None


def land_small(chunks: ChunkStore, commits, repo: str, branch: str, contents: list[tuple[str, bytes]], *,
               description: str = "") -> "Commit":
    """A small write (`is_small`) of (repo path, bytes) as one commit, without pyarrow; a path
    given twice keeps its last bytes.  The caller registers as a writer and checks the branch."""
    layer = index.write_small(chunks, _rows(chunks, contents))
    return commits.land(repo, branch, [layer], description=description)


def _small_files(sources: list["Source"]) -> list[tuple[str, str]] | None:
    """(repo path, local path) of each source if all are small regular files."""
    files, total = [], 0
    for src in sources:
        if src.local == "-":
            return None
        try:
            st = os.stat(src.local)
        except OSError:
            return None  # put_files says what is wrong with it
        total += st.st_size
        if not stat.S_ISREG(st.st_mode) or total > SMALL_BYTES or len(files) >= smalllayer.SMALL_ROWS:
            return None
        files.append((src.dest, src.local))
    return files


def _rows(chunks: ChunkStore, contents: list[tuple[str, bytes]]) -> list[smalllayer.Row]:
    """The layer rows of these files, their distinct contents stored end to end as one chunk."""
    stream, starts, rows = bytearray(), {}, []
    for path, data in contents:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPath(f"File name {path.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8.", hint="Rename it.") from None
        digest = xxhash.xxh3_128_digest(data)
        if digest not in starts:
            starts[digest] = len(stream)
            stream += data
        rows.append((path, len(data), digest, starts[digest]))
    chunk = object_id(stream) if stream else None
    if chunk is not None:
        chunks.put(chunk, bytes(stream))
    return smalllayer.rows_of([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                              [((chunk, start, size),) if size else () for _, size, _, start in rows])
