"""`dpl watch DIR REPO@BRANCH`: a folder mirrored into a branch, one commit per settled batch.

watchdog reports every create, modify, move and delete under the folder;
the watcher only remembers which paths were touched and when.  A batch is
committed once nothing under the folder has changed for `settle` seconds
and every touched file has kept its size and mtime over that time (a file
still being written is waited for, up to `max_wait`, after which the
paths that are quiet go ahead).  A batch becomes one commit: what is in the
folder now is compared with the branch head under the touched paths (a
renamed directory is its old prefix deleted and its new one added), by
size and then content hash, so an event that changed nothing commits
nothing.  The commit lands like any other (start, put, delete, finish), so
the pipelines reading the branch get their jobs; the watcher runs them, as
`dpl put-file` does.

On start the whole folder is compared with the head the same way
(`reconcile`): what changed while the watcher was not running lands as one
commit before watching begins.  Editor and download temporaries (`IGNORED`)
and a `.dpl` store inside the folder are never mirrored.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import xxhash

from .sources import Source
from ..storage import index
from ..storage.errors import BranchNotFound, CommitNotFound, DplError

if TYPE_CHECKING:
    from .store import Store

# Files editors and downloaders make beside the real one: vim's swap files and
# its 4913 write probe, emacs' backups and lock links, office locks, partial downloads.
IGNORED = ("*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "4913", ".~lock.*", "*.part", "*.crdownload", "*.tmp",
           ".DS_Store", ".goutputstream-*")
IGNORED_DIRS = (".dpl", ".git")


def ignored(rel: str) -> bool:
    """Whether a folder-relative path (`a/b.txt`) is never mirrored."""
    parts = rel.split("/")
    if any(p in IGNORED_DIRS for p in parts):
        return True
    return any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in IGNORED)


@dataclass
class Change:
    """One commit's worth of changes, and the commit that landed them."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commit: str | None = None
    jobs: list[dict] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted)

    def describe(self) -> str:
        return f"+{len(self.added)} ~{len(self.modified)} -{len(self.deleted)}"


class Watcher:
    def __init__(self, store: "Store", folder: str | os.PathLike, repo: str, branch: str = "master", *,
                 settle: float = 1.0, max_wait: float = 60.0, executor: str | None = None, run_jobs: bool = True,
                 on_change: Callable[[Change], None] | None = None, on_error: Callable[[DplError], None] | None = None):
        self.store, self.repo, self.branch = store, repo, branch
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise DplError(f"{folder} is not a directory.", hint="dpl watch DIR REPO@BRANCH watches an existing folder.")
        store.repos.repo(repo)  # a missing repo is said now, in one sentence
        self.settle, self.max_wait, self.executor, self.run_jobs = settle, max_wait, executor, run_jobs
        self.on_change = on_change or (lambda change: None)
        self.on_error = on_error or (lambda error: None)
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}  # folder-relative path -> last event time
        self._skip = {os.path.realpath(store.root)}  # a store inside the folder is not data

    # ------------------------------------------------------------ reconcile

    def reconcile(self) -> Change:
        """Commit whatever differs between the folder and the branch head."""
        return self._commit_under([""])

    # ---------------------------------------------------------------- watch

    def watch(self, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
        """Mirror changes until `stop` is set; what is pending then is left to the next start's reconcile."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        watcher._touch(os.fsdecode(raw))

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        try:
            self.reconcile_and_report()
            if ready:
                ready()
            while not stop.wait(min(0.2, self.settle / 2)):
                batch = self._settled()
                if batch:
                    try:
                        self._report(self._commit_under(batch))
                    except DplError as e:
                        self.on_error(e)
                        with self._lock:  # tried again with the next batch
                            for p in batch:
                                self._touched.setdefault(p, time.monotonic())
        finally:
            observer.stop()
            observer.join(timeout=10)

    def reconcile_and_report(self) -> None:
        self._report(self.reconcile())

    def _report(self, change: Change) -> None:
        if change:
            self.on_change(change)

    def _touch(self, path: str) -> None:
        if any(path == s or path.startswith(s + os.sep) for s in self._skip):
            return
        try:
            rel = Path(path).relative_to(self.folder).as_posix()
        except ValueError:
            return
        if rel in ("", ".") or ignored(rel):
            return
        with self._lock:
            self._touched[rel] = time.monotonic()

    def _settled(self) -> list[str]:
        """The touched paths ready to commit: all of them once the folder has been quiet
        for `settle` and their files are stable; after `max_wait`, those that are quiet."""
        now = time.monotonic()
        with self._lock:
            if not self._touched:
                return []
            newest, oldest = max(self._touched.values()), min(self._touched.values())
            if now - newest >= self.settle:
                ready = list(self._touched)
            elif now - oldest >= self.max_wait:
                ready = [p for p, t in self._touched.items() if now - t >= self.settle]
            else:
                return []
        if not self._stable(ready):
            return []
        with self._lock:
            for p in ready:
                if self._touched.get(p, now + 1) <= now:
                    del self._touched[p]
        return ready

    def _stable(self, paths: list[str]) -> bool:
        """No file among `paths` is still growing: size and mtime the same `settle`/2 apart."""
        def stat(p):
            try:
                st = os.stat(self.folder / p)
                return st.st_size, st.st_mtime_ns
            except OSError:
                return None

        first = {p: stat(p) for p in paths}
        time.sleep(min(0.5, self.settle / 2))
        return all(stat(p) == s for p, s in first.items())

    # --------------------------------------------------------------- commit

    def _head_table(self):
        try:
            return self.store.file_table(self.repo, self.branch)[1]
        except (BranchNotFound, CommitNotFound):
            return index.EMPTY

    def _local_files(self, prefixes: list[str]) -> dict[str, str]:
        """Folder-relative paths of the files now under `prefixes` ("" is the whole folder) -> local path."""
        found: dict[str, str] = {}
        for prefix in prefixes:
            top = self.folder / prefix if prefix else self.folder
            if top.is_file() and not top.is_symlink():
                found[prefix] = str(top)
                continue
            if not top.is_dir() or top.is_symlink():
                continue
            for d, dirs, files in os.walk(top):
                dirs[:] = [x for x in dirs if os.path.realpath(os.path.join(d, x)) not in self._skip]
                for name in files:
                    local = os.path.join(d, name)
                    rel = Path(local).relative_to(self.folder).as_posix()
                    if not ignored(rel) and os.path.isfile(local) and not os.path.islink(local):
                        found[rel] = local
        return found

    def _commit_under(self, prefixes: list[str]) -> Change:
        prefixes = _outermost(prefixes)
        local = self._local_files(prefixes)
        table = self._head_table()
        repo_files: dict[str, tuple[int, bytes]] = {}
        if table.num_rows:
            whole = "" in prefixes
            wanted = {"/" + p for p in prefixes}

            def under(path: str) -> bool:  # the path or one of its directories was touched: depth lookups, not a scan per prefix
                return path in wanted or any(path[:i] in wanted for i in range(1, len(path)) if path[i] == "/")

            for path, size, digest in zip(table["path"].to_pylist(), table["size"].to_pylist(), table["hash"].to_pylist()):
                if (whole or under(path)) and not ignored(path[1:]):
                    repo_files[path] = (size, digest)
        change = Change()
        puts = []
        for rel, path in sorted(local.items()):
            where = "/" + rel
            before = repo_files.get(where)
            if before is not None and before[0] == os.path.getsize(path) and before[1] == _hash(path):
                continue
            (change.modified if before is not None else change.added).append(where)
            puts.append(Source(path, where))
        change.deleted = sorted(p for p in repo_files if p[1:] not in local)
        if not change:
            return change
        s = self.store
        opened = s.start_commit(self.repo, self.branch, f"dpl watch {self.folder}: {change.describe()}")
        try:
            if puts:
                s.put_files(self.repo, self.branch, puts)
            if change.deleted:
                s.delete_files(self.repo, self.branch, change.deleted)
            landed = s.finish_commit(self.repo, opened.id)
        except DplError:
            self._abandon(opened.id)  # a file vanished under the read: the next batch sees the folder as it is then
            raise
        change.commit = landed.id
        if self.run_jobs:
            change.jobs = s.run_jobs(landed.id, executor=self.executor)
        return change

    def _abandon(self, commit_id: str) -> None:
        try:
            self.store.delete_commit(self.repo, commit_id)
        except DplError:
            pass


def _outermost(prefixes: list[str]) -> list[str]:
    """The touched paths less those inside another touched directory (a copied tree is walked once)."""
    if "" in prefixes:
        return [""]
    given = set(prefixes)
    return sorted(p for p in given if not any(p[:i] in given for i in range(1, len(p)) if p[i] == "/"))


def _hash(path: str) -> bytes:
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.digest()
