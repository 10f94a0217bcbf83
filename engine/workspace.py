"""A datum's working directory: inputs laid out as `/pfs/<name>/...`, outputs collected.

`materialize` writes a datum's input files from the chunk store (or, for a
file already written during this job, hard-links the copy in a per-job
content cache: a model crossed with 1,000 samples is written once, not 1,000
times).  `collect` stores whatever the step left in `out/` as chunks and
returns its index rows, following symbolic links as Pachyderm does.  Both are used by every executor, including remote
Ray workers, which is why they take a chunk store rather than a `Store`.
"""

from __future__ import annotations

import os
import posixpath
import stat
import threading

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .datums import DatumInput, DatumTask
from .errors import BadOutput
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


def collect(chunks, out: str, *, pfs_map: dict[str, str] | None = None, inputs: list[DatumInput] | None = None) -> pa.Table:
    """Store every file under `out` and return its rows (path, size, hash, refs), sorted by path.

    Symbolic links are followed as Pachyderm's worker follows them
    (`handleSymlinks`): a link to a file stores the file, a link to a
    directory stores everything beneath it.  `pfs_map` maps the sandbox's
    `/pfs/<input>` (what an absolute link names) to where the inputs really
    are.  A link into an `empty_files` or `lazy` input takes the stored file
    (its index row from `inputs`: no bytes are read, as Pachyderm copies the
    file), since the local copy is empty.  Nothing is skipped silently: a
    dangling link, a loop of links, or something that is neither a file, a
    directory nor a link fails the datum, naming it, and so does a link
    whose target lies outside what the step was shown as /pfs.
    """
    walker = _Outputs(pfs_map or {}, inputs or [])
    walker.directory(out, "", frozenset([os.path.realpath(out)]), "/pfs/out")
    writer = ChunkWriter(chunks)
    starts, sizes, hashes = [], [], []
    for path, local in walker.local:
        hasher = xxhash.xxh3_128()
        # As a put does: a big output gets chunks of its own, so the same
        # file stored again (by another job, or put) adds no new chunks.
        with open(local, "rb", buffering=0) as f:
            start, size = writer.write_from(f, hasher)
        starts.append(start)
        sizes.append(size)
        hashes.append(hasher.digest())
    writer.close()
    paths = [p for p, _ in walker.local]
    table = index.make_table(paths, sizes, hashes, writer.refs(starts, sizes))
    if walker.stored:
        rows = [row for _, row in walker.stored]
        copied = index.make_table([p for p, _ in walker.stored], [r["size"] for r in rows], [r["hash"] for r in rows], [r["refs"] for r in rows])
        table = pa.concat_tables([table, copied])
    return table.take(pc.sort_indices(table, [("path", "ascending")])) if table.num_rows > 1 else table


class _Outputs:
    """Walks /pfs/out, following links; collects (path, local file) and (path, stored row)."""

    def __init__(self, pfs_map: dict[str, str], inputs: list[DatumInput]):
        self.pfs_map = {k.rstrip("/"): v.rstrip("/") for k, v in pfs_map.items()}
        self.roots = [os.path.realpath(real) for real in self.pfs_map.values()]  # where links may lead
        self.local: list[tuple[str, str]] = []
        self.stored: list[tuple[str, dict]] = []
        # The real directory of each input whose local files are empty, and its rows.
        self.by_dir: dict[str, list[dict]] = {}
        for inp in inputs:
            if not (inp.empty_files or inp.lazy):
                continue
            real = self.pfs_map.get(f"/pfs/{inp.name}")
            if real is not None:
                self.by_dir.setdefault(os.path.realpath(real), []).extend(inp.files)

    def directory(self, local_dir: str, rel: str, seen: frozenset[str], view: str) -> None:
        """Store what `local_dir` holds as `rel`; `view` is where the step saw it
        (relative links resolve there, and errors name it)."""
        with os.scandir(local_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel_e, view_e = f"{rel}/{e.name}", f"{view}/{e.name}"
            if e.is_file(follow_symlinks=False):
                self.local.append((self._path(rel_e, view_e), e.path))
            elif e.is_dir(follow_symlinks=False):
                self.directory(e.path, rel_e, seen | {os.path.realpath(e.path)}, view_e)
            elif e.is_symlink():
                self.link(e.path, rel_e, seen, view_e)
            else:
                raise BadOutput(f"{view_e} is {_kind(os.lstat(e.path).st_mode)}, which dpl cannot store.",
                                hint="Leave only files, directories and links to them in /pfs/out.")

    def link(self, local: str, rel: str, seen: frozenset[str], view: str) -> None:
        target = os.readlink(local)
        seen_as = target if target.startswith("/") else posixpath.normpath(posixpath.join(posixpath.dirname(view), target))
        host = self._host(seen_as)
        try:
            st = os.stat(host)
        except OSError:
            raise BadOutput(f"{view} is a symbolic link to {target}, which does not exist.",
                            hint="Link to a file or directory the step can see, or write the file itself.") from None
        real = os.path.realpath(host)
        if not any(real == root or real.startswith(root + os.sep) for root in self.roots):
            # dpl reads the target with its own rights, outside the sandbox: a link
            # may only name what the step was shown as /pfs, or it would be a way out.
            raise BadOutput(f"{view} is a symbolic link to {target}, which is outside /pfs.",
                            hint="Copy the file into /pfs/out (cp -L), or link only into /pfs/<input> or /pfs/out.")
        stored = self._stored(real)
        if stored is not None:
            rows, prefix = stored
            base = self._path(rel, view)
            if stat.S_ISREG(st.st_mode):
                found = [(base, r) for r in rows if r["path"] == prefix]
            else:
                under = prefix.rstrip("/") + "/"
                found = [(base + r["path"][len(under) - 1:], r) for r in rows if r["path"].startswith(under)]
            if found:
                self.stored.extend(found)
                return
        if stat.S_ISREG(st.st_mode):
            self.local.append((self._path(rel, view), host))
        elif stat.S_ISDIR(st.st_mode):
            if real in seen:
                raise BadOutput(f"{view} is a symbolic link to {target}, which contains it: a loop.",
                                hint="Link to a directory outside the link itself.")
            self.directory(host, rel, seen | {real}, seen_as)
        else:
            raise BadOutput(f"{view} is a symbolic link to {target}, which is {_kind(st.st_mode)}.",
                            hint="Link only to files and directories.")

    def _host(self, seen_as: str) -> str:
        """Where a path the step saw is on this machine: `/pfs/<input>/...` is in
        `pfs_map`; a step without a sandbox sees host paths, so anything else is itself."""
        for sandbox, real in self.pfs_map.items():
            if seen_as == sandbox or seen_as.startswith(sandbox + "/"):
                return real + seen_as[len(sandbox):]
        return seen_as

    def _stored(self, real: str) -> tuple[list[dict], str] | None:
        """(rows, path in the input) when `real` lies in an input whose local files are empty."""
        for root, rows in self.by_dir.items():
            if real == root or real.startswith(root + os.sep):
                return rows, "/" + real[len(root):].strip(os.sep) if real != root else "/"
        return None

    def _path(self, rel: str, view: str) -> str:
        try:
            return normalize_path(rel)
        except InvalidPath as e:
            raise BadOutput(f"The step wrote {view!r}, a name dpl cannot store: {e.message}", hint=e.hint) from None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
