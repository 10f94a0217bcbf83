"""`dpl://REPO@REF/path`: dpl's repos as an fsspec filesystem.

    import pandas as pd
    df = pd.read_csv("dpl://training@master/iris.csv")
    with fsspec.open("dpl://training@master/new.csv", "wb") as f:  # one commit on close
        f.write(data)

REF is whatever `dpl get-file` takes: a branch, a commit id (or a unique
prefix of one), and ancestry (`master^`, `master~2`); without it, `master`.
Registered through fsspec's entry point (pyproject), so pandas, polars,
pyarrow and DuckDB find it by the URL alone.

Which store: the `store=` option (a store directory, or an open `Store`),
else the server that `address=`, DPL_ADDRESS or `dpl connect` names, else the
store found from the current directory (DPL_STORE, `.dpl`): the CLI's rule.

Why here, in `client/`: the filesystem is a door over the Store interface,
like the CLI, and works on either implementation of it (the embedded engine
or `RemoteStore`); the engine cannot reach up to the HTTP client, and the
client already reaches down to the engine.  It uses only what both doors
offer (resolve, list, put, delete, open and finish commits), except for the
ranged read each door does its own way (client/access.py, with the landing
of writes as commits; this module is the fsspec face over it).

Reads are pinned: a file opened on a branch reads the commit the branch
held when it was opened, whatever lands meanwhile.  Writes are spooled to a
local temporary file, then put as the engine's put-file does (a server
receives the bytes as with `dpl put-file --address`); a transaction puts all
its writes and deletes into one commit per branch.

How DuckDB reads through it (issue 17's benchmark): its CSV reader asks for
32 MB at a time from two threads, through `DplFile.read` with no fsspec
cache, so each ask is one ranged read; `access.ReadAhead` has the next 32 MB
read (chunks mapped and verified, one copy) while DuckDB parses this one.

(Past 400 lines: this is one fsspec interface, the filesystem and its file
class, whose methods share the path parsing and the door; what is not
fsspec's face, the ranged reads and the landing of writes, is already in
client/access.py.)
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import suppress

from fsspec import AbstractFileSystem
from fsspec.spec import AbstractBufferedFile
from fsspec.transaction import Transaction

from . import access, config
from ..storage import errors as storage_errors
from ..storage.errors import DplError, InvalidRef
from ..storage.paths import normalize_path


class DplTransaction(Transaction):
    """`with fs.transaction:` — every write and delete inside lands on exit,
    one commit per branch; nothing lands if the block raises."""

    def __init__(self, fs, **kwargs):
        super().__init__(fs, **kwargs)
        self.ops: list = []

    def start(self):
        super().start()
        self.ops = []

    def complete(self, commit=True):
        fs = self.fs
        try:
            for f in list(self.files):
                if commit and not f.closed:
                    f.close()  # an unclosed file's bytes are part of the transaction too
            if commit:
                access.land(self.ops)
        finally:
            for f in self.files:
                f.discard()
            for op in self.ops:
                op.discard()
            self.files.clear()
            self.ops = []
            if fs is not None:
                fs._intrans, fs._transaction = False, None
            self.fs = None


# -------------------------------------------------------------- filesystem


class DplFileSystem(AbstractFileSystem):
    """dpl repos through fsspec: `dpl://REPO@REF/path`.

    Options: `store` (a store directory or an open `Store`), `address` (a
    `dpl serve` URL) and `token`; without them, the store the `dpl` command
    would act on from here.
    """

    protocol = "dpl"
    root_marker = ""
    transaction_type = DplTransaction

    def __init__(self, store=None, address: str | None = None, token: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._store_option, self._address_option, self._token = store, address, token

    # ----------------------------------------------------------- the store

    def _door(self) -> access.Door:
        """Found again on each call, as the CLI would find it now (a cached
        instance follows DPL_STORE, DPL_ADDRESS and the working directory)."""
        option = self._store_option
        if option is not None and not isinstance(option, (str, os.PathLike)):
            return access.Embedded(option)  # an open Store
        if option is not None:
            return access.open_door(("store", _store_dir(option)), None)
        url = config.address(self._address_option)
        if url is not None:
            return access.open_door(("address", url, self._token), self._token)
        from ..engine.storedir import find_store

        return access.open_door(("store", os.path.realpath(find_store())), None)

    @property
    def store(self):
        """The Store (or RemoteStore) this filesystem acts on now."""
        return self._door().store

    # --------------------------------------------------------------- paths

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return super()._strip_protocol(path).lstrip("/")

    def _split(self, path) -> tuple[str, str | None, str | None, str]:
        """(`repo@ref` as written, repo, ref, path in the repo); repo None for the root."""
        from ..engine import refs

        path = self._strip_protocol(path)
        if not path:
            return "", None, None, "/"
        head, _, rest = path.partition("/")
        parsed = refs.parse(head, path_allowed=False)
        return head, parsed.repo, parsed.ref, normalize_path(rest, allow_root=True)

    @staticmethod
    def _name(head: str, inner: str) -> str:
        return head if inner == "/" else head + inner

    def _branch(self, path) -> tuple[access.Door, str, str, str]:
        """Where a write to `path` goes: a branch, never a commit or an ancestor."""
        head, repo, ref, inner = self._split(path)
        if repo is None or inner == "/":
            raise storage_errors.InvalidPath(f"dpl://{path} is not a file path in a repo.", hint="Write dpl://REPO@BRANCH/path/file.")
        from ..engine import refs

        branch = ref or "master"
        base, depth = refs.split_ancestry(branch)
        refusal = InvalidRef(f"{head} names a commit, and commits do not change.",
                             hint=f"Write to a branch: dpl://{repo}@{base if depth else 'master'}{inner}.")
        if depth:
            raise refusal
        door = self._door()
        with access.found(head):
            branches = {b["branch"] for b in _rows(door.store.list_branches(repo))}
        if branch not in branches:
            try:
                door.store.resolve_commit(repo, branch, allow_open=True)
            except DplError:
                pass  # a new branch: the write makes it, as put-file does
            else:
                raise refusal
        return door, repo, branch, inner

    # ------------------------------------------------------------- listing

    def ls(self, path, detail=True, **kwargs):
        head, repo, ref, inner = self._split(path)
        if repo is None:
            entries = [{"name": r["name"], "size": r.get("size", 0) or 0, "type": "directory"} for r in self.store.list_repos()]
        else:
            with access.found(self._name(head, inner)):
                entries = [_entry(head, r) for r in _rows(self.store.list_files(repo, ref, inner))]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path, **kwargs):
        head, repo, ref, inner = self._split(path)
        name = self._name(head, inner)
        if repo is None:
            return {"name": "", "size": 0, "type": "directory"}
        with access.found(name):
            if inner == "/":
                commit = self.store.resolve_commit(repo, ref)
                return {"name": name, "size": commit.size, "type": "directory", "commit": commit.id}
            rows = self.store.list_files(repo, ref, inner)
        first, count, total = _summary(rows)
        if count == 1 and first["path"] == inner and first["type"] == "file":
            return _entry(head, first)
        return {"name": name, "size": total, "type": "directory"}

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        """Every file under `path` from one recursive listing (not a walk of
        one listing per directory); directories derived from the file paths."""
        head, repo, ref, inner = self._split(path)
        if repo is None:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        try:
            with access.found(self._name(head, inner)):
                rows = _rows(self.store.list_files(repo, ref, inner, recursive=True))
        except FileNotFoundError:
            return {} if detail else []
        out: dict[str, dict] = {}
        base = 0 if inner == "/" else inner.count("/")
        for row in rows:
            p = row["path"]
            if p == inner or maxdepth is None or p.count("/") - base <= maxdepth:
                out[head + p] = _entry(head, row)
            if not withdirs:
                continue
            parts = p.split("/")
            for d in range(base + 1, min(len(parts) - 1, base + 1 + (maxdepth if maxdepth is not None else len(parts)))):
                name = head + "/".join(parts[: d + 1])
                entry = out.setdefault(name, {"name": name, "size": 0, "type": "directory"})
                entry["size"] += row["size"]
        if withdirs and inner != "/" and head + inner not in out and rows:
            out[head + inner] = {"name": head + inner, "size": sum(r["size"] for r in rows), "type": "directory"}
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    def modified(self, path):
        """When the commit `path` is read from landed: a file at a ref
        changes only when a commit lands (DuckDB keys its cache on this)."""
        from datetime import datetime, timezone

        head, repo, ref, inner = self._split(path)
        if repo is None:
            raise IsADirectoryError(errno.EISDIR, "The list of repos has no time of its own.", "")
        with access.found(self._name(head, inner)):
            commit = self.store.resolve_commit(repo, ref)
        return datetime.fromtimestamp(commit.finished or commit.created, timezone.utc)

    created = modified

    def ukey(self, path):
        return self.info(path).get("hash") or super().ukey(path)

    def checksum(self, path):
        return int(self.ukey(path), 16)

    # ------------------------------------------------------------- reading

    def _reader(self, path) -> tuple[str, access.Range]:
        head, repo, ref, inner = self._split(path)
        name = self._name(head, inner)
        if repo is None or inner == "/":
            raise IsADirectoryError(errno.EISDIR, "A repo (or the list of repos) is a directory, not a file.", name)
        with access.found(name):
            return name, self._door().reader(repo, ref, inner)

    def cat_file(self, path, start=None, end=None, **kwargs):
        _, rng = self._reader(path)
        start = 0 if start is None else (max(0, rng.size + start) if start < 0 else start)
        end = rng.size if end is None else (rng.size + end if end < 0 else end)
        return rng.fetch(start, end)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode == "rb":
            name, rng = self._reader(path)
            return DplFile(self, name, mode, block_size, autocommit, cache_options=cache_options, reader=rng, **kwargs)
        if mode not in ("wb", "xb", "ab"):
            raise ValueError(f"dpl:// files open as rb, wb, xb or ab, not {mode!r}.")
        door, repo, branch, inner = self._branch(path)
        if mode == "xb" and self.exists(path):
            raise FileExistsError(errno.EEXIST, "The file exists already (mode 'xb' creates only).", self._strip_protocol(path))
        target = (door, repo, branch, inner)
        return DplFile(self, self._strip_protocol(path), mode, block_size, autocommit, cache_options=cache_options, target=target, **kwargs)

    # ------------------------------------------------------------- writing

    def pipe(self, path, value=None, **kwargs):
        """Several files at once (a dict) land as one commit per branch."""
        if not isinstance(path, dict) or self._intrans:
            return super().pipe(path, value, **kwargs)
        ops = []
        try:
            for p, data in path.items():
                door, repo, branch, inner = self._branch(p)
                ops.append(access.Put(door, repo, branch, inner, _spool(data)))
            access.land(ops)
        finally:
            for op in ops:
                op.discard()

    def rm(self, path, recursive=False, maxdepth=None):
        """Delete files (and, with `recursive`, directories): one commit per
        branch however many paths, or part of the transaction's commit."""
        from glob import has_magic

        paths = [path] if isinstance(path, str) else list(path)
        expanded = []
        for p in paths:  # patterns expand as fsspec's own rm expands them
            expanded.extend(self.glob(p) if has_magic(self._strip_protocol(p)) else [p])
        ops: dict[tuple, access.Delete] = {}
        for p in expanded:
            door, repo, branch, inner = self._branch(p)
            if not recursive and self.info(p)["type"] == "directory":
                raise IsADirectoryError(errno.EISDIR, "This is a directory: pass recursive=True to delete it and all beneath it.", p)
            ops.setdefault((id(door), repo, branch), access.Delete(door, repo, branch)).paths.append(inner)
        if self._intrans:
            self.transaction.ops.extend(ops.values())
            return
        with access.found(str(path)):
            access.land(list(ops.values()))

    def rm_file(self, path):
        self.rm(path)

    def _rm(self, path):
        self.rm(path)

    def mkdir(self, path, create_parents=True, **kwargs):
        pass  # a directory exists when a file is put beneath it

    def makedirs(self, path, exist_ok=False):
        pass

    def rmdir(self, path):
        pass  # an empty directory does not exist

    def cp_file(self, path1, path2, **kwargs):
        # The bytes travel once more, but are stored once: chunks are content-addressed.
        with self.open(path1, "rb") as src, self.open(path2, "wb") as dst:
            while piece := src.read(1 << 22):
                dst.write(piece)


class DplFile(AbstractBufferedFile):
    """A file of a commit (read, ranged) or of a branch (written, put on close)."""

    # About one chunk (the engine's CDC average): a read-ahead past what was
    # asked fetches a chunk or two more, not five, when a Parquet reader
    # jumps from column to column.
    DEFAULT_BLOCK_SIZE = 1 << 20

    def __init__(self, fs, path, mode="rb", block_size="default", autocommit=True, cache_type="none",
                 cache_options=None, reader: access.Range | None = None, target=None, **kwargs):
        self.reader, self.target, self.op = (access.ReadAhead(reader) if reader else None), target, None
        if reader is not None:
            kwargs["size"] = reader.size
        super().__init__(fs, path, mode, block_size or "default", autocommit, cache_type=cache_type,
                         cache_options=cache_options, **kwargs)
        if reader is not None:
            self.details = {"name": path, "size": reader.size, "type": "file", "hash": reader.hash, "commit": reader.commit}

    def _fetch_range(self, start, end):
        return self.reader.fetch(start, end)

    def _initiate_upload(self):
        fd, self._spool = tempfile.mkstemp(prefix="dpl-fsspec-")
        self._out = os.fdopen(fd, "wb")

    def _upload_chunk(self, final=False):
        self._out.write(self.buffer.getbuffer())
        if not final:
            return True
        self._out.close()
        door, repo, branch, inner = self.target
        self.op = access.Put(door, repo, branch, inner, self._spool, append=self.mode == "ab")
        if self.autocommit:
            self.commit()
        elif self.fs._intrans:
            self.fs.transaction.ops.append(self.op)
        return True

    def commit(self):
        """Land this file's write (by itself) unless a transaction landed it."""
        if self.op is not None and not self.op.done:
            try:
                with access.found(self.path):
                    access.land([self.op])
            finally:
                self.op.discard()

    def discard(self):
        if self.op is not None:
            self.op.discard()
        elif getattr(self, "_out", None) is not None:
            self._out.close()
            with suppress(FileNotFoundError):
                os.unlink(self._spool)


# ------------------------------------------------------------------ helpers


def _store_dir(option) -> str:
    """The store directory `store=` names: the store itself, or a directory holding `.dpl/`."""
    path = os.path.realpath(option)
    for candidate in (path, os.path.join(path, ".dpl")):
        if os.path.exists(os.path.join(candidate, "config.json")):
            return candidate
    raise storage_errors.StoreNotFound(f"store={os.fspath(option)!r} is not a dpl store.",
                                       hint="Give the store directory (the .dpl/ that `dpl init` made), or run `dpl init` there.")


def _rows(listing) -> list[dict]:
    """A listing as dicts, whichever door gave it (the engine answers with Arrow tables)."""
    return listing.to_pylist() if hasattr(listing, "to_pylist") else list(listing)


def _summary(listing) -> tuple[dict | None, int, int]:
    """(first row, row count, total size) without turning a long Arrow listing into dicts."""
    if hasattr(listing, "num_rows"):
        import pyarrow.compute as pc

        count = listing.num_rows
        first = listing.slice(0, 1).to_pylist()[0] if count else None
        return first, count, int(pc.sum(listing["size"]).as_py() or 0)
    rows = list(listing)
    return (rows[0] if rows else None), len(rows), sum(r["size"] or 0 for r in rows)


def _entry(head: str, row: dict) -> dict:
    entry = {"name": head + row["path"], "size": row["size"], "type": "directory" if row["type"] == "dir" else "file"}
    if row.get("hash"):
        entry["hash"] = row["hash"]
    return entry


def _spool(data) -> str:
    fd, local = tempfile.mkstemp(prefix="dpl-fsspec-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return local
