"""A datum's working directory: inputs laid out as `/pfs/<name>/...`, outputs collected.

`materialize` writes a datum's input files from the chunk store (or, for a
file already written during this job, hard-links the copy in a per-job
content cache: a model crossed with 1,000 samples is written once, not 1,000
times).  `collect` stores whatever the step left in `out/` as chunks and
returns its index rows.  Both are used by every executor, including remote
Ray workers, which is why they take a chunk store rather than a `Store`.
"""

from __future__ import annotations

import os
import stat
import threading

import pyarrow as pa
import xxhash

from .datums import DatumTask
from ..storage import index
from ..storage.chunking import ChunkWriter
from ..storage.chunkstore import object_id
from ..storage.errors import Corruption, InvalidPath
from ..storage.paths import normalize_path


class _ThreadCache(threading.local):
    """Each thread's own few verified chunks (workers materialise in parallel)."""

    def __init__(self):
        self.chunks: dict[bytes, bytes] = {}


class ChunkReader:
    """Verified reads of chunk slices, with a small per-thread cache."""

    def __init__(self, chunks, cache_size: int = 4):
        self.chunks = chunks
        self.cache_size = cache_size
        self._cache = _ThreadCache()

    def slice(self, ref: dict) -> memoryview:
        cache = self._cache.chunks
        chunk = ref["chunk"]
        data = cache.get(chunk)
        if data is None:
            data = self.chunks.get(chunk)
            if object_id(data) != chunk:
                raise Corruption(f"Chunk {chunk.hex()} is damaged (its bytes no longer match its hash).", hint="Run `dpl fsck`.")
            if len(cache) >= self.cache_size:
                cache.pop(next(iter(cache)))
            cache[chunk] = data
        return memoryview(data)[ref["offset"] : ref["offset"] + ref["length"]]

    def write_to(self, refs: list[dict], fd: int) -> None:
        for ref in refs:
            view = self.slice(ref)
            while view:
                view = view[os.write(fd, view):]


def materialize(reader: ChunkReader, task: DatumTask, pfs: str, cache_dir: str | None = None) -> None:
    """Lay out a datum's inputs under `pfs/<name>/<path>`, read-only."""
    made: set[str] = set()
    for inp in task.inputs:
        root = os.path.join(pfs, inp.name)
        os.makedirs(root, exist_ok=True)
        for row in inp.files:
            target = root + row["path"]
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if inp.empty_files:
                open(target, "wb").close()
                continue
            if cache_dir is not None and row["size"] > 4096:
                cached = os.path.join(cache_dir, row["hash"].hex())
                if not os.path.exists(cached):
                    _write_file(reader, row["refs"], cached)
                try:
                    os.link(cached, target)
                    continue
                except OSError:
                    pass  # another filesystem: fall back to a copy
            _write_file(reader, row["refs"], target)


def _write_file(reader: ChunkReader, refs: list[dict], dest: str) -> None:
    tmp = f"{dest}.tmp-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    try:
        reader.write_to(refs, fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)


def collect(chunks, out: str, *, pfs_map: dict[str, str] | None = None) -> pa.Table:
    """Store every file under `out` and return its rows (path, size, hash, refs).

    Symlinks that point at `/pfs/<input>/...` (Pachyderm's idiom for passing
    an input through unchanged) are followed through `pfs_map`, which maps
    sandbox paths to where the inputs really are.
    """
    writer = ChunkWriter(chunks)
    paths, sizes, hashes, starts = [], [], [], []
    root_len = len(os.path.join(out, ""))
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames.sort()
        for name in sorted(filenames):
            local = os.path.join(dirpath, name)
            rel = "/" + local[root_len:]
            source = _resolve(local, pfs_map)
            if source is None:
                continue
            try:
                path = normalize_path(rel)
            except InvalidPath:
                continue
            hasher = xxhash.xxh3_128()
            # As a put does: a big output gets chunks of its own, so the same
            # file stored again (by another job, or put) adds no new chunks.
            with open(source, "rb", buffering=0) as f:
                start, size = writer.write_from(f, hasher)
            paths.append(path)
            sizes.append(size)
            hashes.append(hasher.digest())
            starts.append(start)
    writer.close()
    refs = writer.refs(starts, sizes)
    return index.make_table(paths, sizes, hashes, refs)


def _resolve(local: str, pfs_map: dict[str, str] | None) -> str | None:
    """The regular file to read for `local`, or None for anything else."""
    try:
        st = os.lstat(local)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return local
    if not stat.S_ISLNK(st.st_mode):
        return None
    target = os.readlink(local)
    if pfs_map:
        for sandbox, real in pfs_map.items():
            if target == sandbox or target.startswith(sandbox.rstrip("/") + "/"):
                target = real + target[len(sandbox.rstrip("/")):]
                break
    if not os.path.isabs(target):
        target = os.path.join(os.path.dirname(local), target)
    return target if os.path.isfile(target) else None
