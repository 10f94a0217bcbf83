"""Making commits: the `Commits` component.

A commit is made in one of two ways: a writer lands a delta (the layers it
wrote) on a branch in one step, or opens a commit, adds layers to it, and
finishes it.  Either way `land` makes it the branch's head inside one
metadata transaction: the head is read and moved there, so the move is a
compare-and-swap, and two writers never lose a commit (a writer that finds
the head moved simply gets the new head as its parent).

Whoever must react to a landed commit in the same transaction (the waves of
downstream jobs) subscribes with `on_landed`; `Store` wires that.

Writers of one machine on one branch take turns (storage/turns.py), and the
holder of the turn lands the commits queued behind it with its own, as one
chain in one transaction (group commit, engine/landqueue.py).  The work of
a landing (reading the parent's layers, the collision check, the file
count, compaction) is done holding the turn but before the write
transaction, against the head read then, and redone inside it only if a
writer of another machine moved the head meanwhile: the one metadata write
lock is held for a few statements, not for index work.  When every layer
involved is small (storage/smalllayer.py) none of it imports pyarrow.

(A little over 400 lines: landing alone and landing in a group share the
preparation, bounding and compaction of a commit's index, one piece.)
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Callable, NamedTuple

import xxhash

from . import landqueue
from .repos import Repos
from .writers import writes_objects
from ..storage import index, smalllayer, turns
from ..storage.chunkstore import ChunkStore
from ..storage.errors import CommitNotOpen, Conflict, PathCollision
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata import transactions as txn_rows
from ..storage.metadata.commits import Commit
from ..storage.metadata.db import Database, Tx
from ..storage.metadata.memo import MemoTx
from ..storage.paths import validate_name

# Called inside the landing transaction: (tx, repo, branch, commit id, origin).
LandedCallback = Callable[[Tx, str, str, str, str], None]


# How many more groups the holder of a branch's turn lands after its own (see `Commits._drain`).
DRAIN_ROUNDS = 3


def new_commit_id() -> str:
    return uuid.uuid4().hex


class Commits:
    """Open, finish and land commits; compact their indexes."""

    def __init__(self, db: Database, chunks: ChunkStore, repos: Repos, root: Path):
        self.db, self.chunks, self.repos = db, chunks, repos
        self.root = root  # where the writers registry lives (`writes_objects`)
        self._landed: list[LandedCallback] = []
        self._turn_paths: dict[tuple[str, str], str] = {}  # (repo, branch) -> its turn's lock file

    def on_landed(self, callback: LandedCallback) -> None:
        """Call `callback` inside the transaction of every commit that lands."""
        self._landed.append(callback)

    def start_commit(self, repo: str, branch: str = "master", description: str = "", *, commit_id: str | None = None) -> Commit:
        validate_name(branch, "branch")
        self.repos.repo(repo)
        self.repos.refuse_output_branch(repo, branch, "start a commit on")
        with self.db.write() as tx:
            if commit_rows.open_on(tx, repo, branch) is not None:
                raise Conflict(
                    f"Branch {branch!r} of repo {repo!r} already has an open commit.",
                    hint="Finish it with `dpl finish-commit` first.",
                )
            head = repo_rows.ensure_branch(tx, repo, branch, time.time())
            cid = commit_id or new_commit_id()
            commit_rows.insert_open(tx, repo, cid, branch, head, time.time(), description)
        return self.repos.get_commit(repo, cid)

    def finish_commit(self, repo: str, commit_ref: str, description: str | None = None) -> Commit:
        commit = self.repos.find_open(repo, commit_ref)
        txn = txn_rows.get(self.db, commit.id)
        if txn is not None and txn.state == "open":
            raise Conflict(f"Commit {repo}@{commit.id[:12]} belongs to transaction {txn.id[:12]}; it lands with the transaction.",
                           hint="Run `dpl finish-transaction` (or `dpl delete-transaction` to drop it).")
        return self.land(repo, commit.branch, commit.delta, description=description, open_id=commit.id)

    def _branch_turn(self, repo: str, branch: str) -> turns.Turn:
        # Writers landing on one branch take turns for the whole landing (threads
        # and processes of this machine): each one's index work is then done once,
        # against the head it lands on, instead of redone after every racing
        # writer (8 writers on a branch prepared each commit ~2 times).  Other
        # branches still land side by side; writers on other machines (a shared
        # S3 + PostgreSQL store) race as before, and the transaction stays the judge.
        path = self._turn_paths.get((repo, branch))
        if path is None:
            directory = self.root / "turns"
            directory.mkdir(exist_ok=True)
            key = xxhash.xxh3_128_hexdigest(f"{repo}\0{branch}".encode())[:20]  # not hashlib: its OpenSSL costs ~4 ms to load
            path = self._turn_paths[(repo, branch)] = str(directory / key)
        return turns.turn(path)

    @writes_objects
    def land(self, repo: str, branch: str, delta: list[index.Layer], **kw) -> Commit:
        """Make `delta` the new head commit of `branch`, atomically (see `_land`)."""
        if kw.get("tx") is not None:
            return self._land(repo, branch, delta, **kw)
        if kw.get("open_id") is None and kw.get("hook") is None and kw.get("expect_head", False) is False:
            return self._land_grouped(repo, branch, delta, description=kw.get("description"),
                                      commit_id=kw.get("commit_id"), origin=kw.get("origin", "user"), job=kw.get("job"))
        with self._holding(repo, branch):
            return self._land(repo, branch, delta, **kw)

    def _land_grouped(self, repo: str, branch: str, delta: list[index.Layer], **request) -> Commit:
        """Land `delta` as `_land` does, with whatever other writers of this
        machine have queued on the branch meanwhile (engine/landqueue.py):
        one transaction, one flush and one compaction for the lot."""
        turn = self._branch_turn(repo, branch)
        mine = landqueue.Request(request.pop("commit_id") or new_commit_id(), delta, **request)
        queue = landqueue.queue(turn.path + ".queue")
        # Our bytes durable before we queue or take the turn: flushes of writers
        # waiting side by side share the file system's journal commits, where
        # one made holding the turn keeps every other writer waiting.
        self.chunks.sync()
        if turn.try_enter():  # nobody ahead: no need to queue (the common case of one writer)
            self._hold(turn, repo, branch, queue, mine)
            return mine.commit or self.repos.get_commit(repo, mine.commit_id)
        try:
            if turn.mutex.locked():
                queue.put_local(mine)  # a thread of ours holds the turn, or waits for it
            else:
                queue.put_file(mine)  # another process holds it
        except OSError:  # a directory we cannot write: land alone, in turn
            with self._holding(repo, branch):
                return self._land(repo, branch, delta, description=mine.description, commit_id=mine.commit_id,
                                  origin=mine.origin, job=mine.job)
        try:
            if mine.path is None:  # a thread of ours lands it, or we do when our turn comes
                turn.__enter__()
                self._hold(turn, repo, branch, queue, mine)
            else:  # woken when it lands, or when the turn is free
                while queue.queued(mine):
                    if turn.try_enter():
                        self._hold(turn, repo, branch, queue, mine)
                        break
                    queue.wait(mine)
        except BaseException:
            queue.done([mine])  # withdrawn (if it landed meanwhile, it stays landed)
            raise
        finally:
            queue.forget(mine)
        return mine.commit or self.repos.get_commit(repo, mine.commit_id)

    def _hold(self, turn: turns.Turn, repo: str, branch: str, queue: landqueue.Queue, mine: landqueue.Request) -> None:
        """Holding `turn`: land `mine` with what is queued (unless the holder
        before us landed it), and what is queued meanwhile; then leave it."""
        try:
            if queue.queued(mine):
                self._land_group(repo, branch, queue, queue.pending(), mine)
                self._drain(repo, branch, queue)
        finally:
            self._leave(turn, queue)

    @contextlib.contextmanager
    def _holding(self, repo: str, branch: str):
        """The branch's turn, for a landing that does not take queued requests along."""
        turn = self._branch_turn(repo, branch)
        turn.__enter__()
        try:
            yield
        finally:
            self._leave(turn, landqueue.queue(turn.path + ".queue"))

    @staticmethod
    def _leave(turn: turns.Turn, queue: landqueue.Queue) -> None:
        turn.__exit__(None, None, None)
        queue.wake_all()  # whoever queued after our last look: the turn is theirs to take

    def _drain(self, repo: str, branch: str, queue: landqueue.Queue) -> None:
        # What was queued while we landed is landed by us too, a few rounds
        # at most: this process has the branch's layers in its cache, where
        # the next holder (another process) would read and parse them again.
        # Our own commit has landed: a failure here is left to the owners of
        # the requests, which stay queued and are landed by them.
        for _ in range(DRAIN_ROUNDS):
            more = queue.pending()
            if not more:
                return
            try:
                self._land_group(repo, branch, queue, more, None)
            except Exception:  # noqa: BLE001 - their owners land them and meet the error themselves
                return

    def _land_group(self, repo: str, branch: str, queue: landqueue.Queue, requests: list[landqueue.Request],
                    mine: landqueue.Request | None) -> None:
        """Land `requests` (mine among them) as a chain of commits, in one
        transaction; requests that cannot land stay queued for their owners,
        and mine raises its error.  Called holding the branch's turn."""
        if mine is not None and not any(r is mine or (r.path is not None and r.path == mine.path) for r in requests):
            requests.append(mine)  # (one we could not read back: land it all the same)
        requests = list({r.commit_id: r for r in reversed(requests)}.values())[::-1]  # each once
        files = [r for r in requests if r.path is not None]
        # A holder killed after its commit left the files of what it landed: drop those.
        done = commit_rows.existing(self.db, repo, [r.commit_id for r in files]) if files else set()
        if done:
            queue.done(r for r in files if r.commit_id in done)
            requests = [r for r in requests if r.commit_id not in done]
        if not requests:
            return
        loaded = {r.commit_id: [index.load_layer(self.chunks, l) for l in r.delta] for r in requests}
        base = commit_rows.head(self.db, repo, branch)
        chain, clashes = self._chain(repo, branch, base, requests, loaded, compact=True)
        compacted = True
        self.chunks.sync()  # every merged layer durable (a no-op when nothing was merged)
        if chain:
            with self.db.write() as tx:
                current = commit_rows.head(tx, repo, branch)  # one statement where a branch with a head has one
                if current is None:
                    repo_rows.ensure_branch(tx, repo, branch, time.time())
                if (current.id if current else None) != (base.id if base else None) or (current.layers if current else []) != (base.layers if base else []):
                    # Another machine landed meanwhile (or compacted the head): chain on its commit.
                    chain, clashes = self._chain(repo, branch, current, requests, loaded)
                    compacted = False
                if chain:
                    commit_rows.insert_finished_many(tx, chain)
                    repo_rows.set_head(tx, repo, branch, chain[-1].id)
                    # Subscribers (downstream jobs) act in the same transaction as the
                    # commits: a crash can never leave a commit whose pipelines never hear of it.
                    reads = MemoTx(tx) if len(chain) > 1 else tx  # the same graph and triggers, read once for the lot
                    for c in chain:
                        for callback in self._landed:
                            callback(reads, repo, branch, c.id, c.origin)
            landed = {c.id: c for c in chain}
            for r in requests:
                r.commit = landed.get(r.commit_id)  # what its owner returns (handed to it, if of another process)
            if mine is not None:
                mine.commit = landed.get(mine.commit_id, mine.commit)
            queue.done(r for r in requests if r.commit_id in landed)
            last = chain[-1] if chain else None
            if last is not None and not compacted and len(last.layers) > index.MAX_LAYERS // 2:
                self._compact_if_head(repo, branch, last.id)
        if mine is not None and mine.commit_id in clashes:
            queue.done([mine])
            raise _collision(repo, branch, clashes[mine.commit_id])

    def _chain(self, repo: str, branch: str, base: Commit | None, requests: list[landqueue.Request], loaded: dict,
               *, compact: bool = False) -> tuple[list[Commit], dict]:
        """The commits landing `requests` one on another on `base` makes, and
        the path collisions of those that cannot land (skipped).  With
        `compact` the chain's last commit is compacted as a lone writer's
        would be (outside the transaction, so that it costs no second
        flush), and so is any before it that would pass MAX_LAYERS: a chain
        left to `_bounded` alone would fold down to MAX_LAYERS // 2 layers
        every few commits, rewriting hundreds of rows each time, which
        every other writer process must then read back.  The commits
        between keep their parent's layers plus their own: compacting each
        merged the same few small layers again at every commit, holding the
        turn every other writer waits for."""
        chain, clashes, now = [], {}, time.time()
        for k, r in enumerate(requests):
            this = compact and (k == len(requests) - 1 or len(base.layers if base else []) + len(r.delta) > index.MAX_LAYERS)
            prepared = self._prepare(base, r.delta, loaded[r.commit_id], compact=this, flush=not compact)
            if prepared.clash:
                clashes[r.commit_id] = prepared.clash
                continue
            base = Commit(repo=repo, id=r.commit_id, branch=branch, parent=base.id if base else None, state="finished",
                          layers=prepared.layers, delta=r.delta, size=prepared.size, nfiles=prepared.nfiles, created=now,
                          finished=now, description=r.description or "", origin=r.origin, job=r.job)
            chain.append(base)
        return chain, clashes

    def _land(
        self,
        repo: str,
        branch: str,
        delta: list[index.Layer],
        *,
        description: str | None = None,
        open_id: str | None = None,
        expect_head: str | None | bool = False,
        commit_id: str | None = None,
        origin: str = "user",
        job: str | None = None,
        hook=None,
        tx: Tx | None = None,
    ) -> Commit:
        """Make `delta` the new head commit of `branch`, atomically.

        The head is read and moved inside one write transaction, so the new
        commit's parent is whatever the head is at that instant (a writer
        that raced us simply becomes our parent).  `expect_head` turns that
        rebase into a refusal, for writes that depended on the old head
        (appends).  `hook(tx, commit_id)` runs inside the same transaction
        (a job records its success there, so output and job state agree).
        Given `tx`, it lands in that transaction (a dpl transaction lands
        several commits at once, engine/transactions.py), whose caller
        compacts it once that transaction has committed.
        """
        delta_loaded = [index.load_layer(self.chunks, l) for l in delta]
        outer = tx
        # Done outside the lock against the head as it is now; inside, reused if it has not moved.
        early = None if outer is not None else self._prepare(commit_rows.head(self.db, repo, branch), delta, delta_loaded,
                                                               compact=True)
        self.chunks.sync()  # bytes (and any merged layer) durable before a commit refers to them, in one flush
        with (contextlib.nullcontext(outer) if outer is not None else self.db.write()) as tx:
            head = repo_rows.ensure_branch(tx, repo, branch, time.time())
            if expect_head is not False and head != expect_head:
                raise Conflict(f"Branch {branch!r} of repo {repo!r} moved during the write.", hint="Run the command again.")
            base = commit_rows.get(tx, repo, head) if head else None
            if early is not None and early.head == head and early.base_layers == (base.layers if base else []):
                prepared = early  # (the same layers, too: a parent compacted meanwhile may have lost its old ones to gc)
            else:
                prepared = self._prepare(base, delta, delta_loaded)
            if prepared.clash:
                raise _collision(repo, branch, prepared.clash)
            size, nfiles, layers = prepared.size, prepared.nfiles, prepared.layers
            now = time.time()
            if open_id:
                finished = commit_rows.finish(tx, repo, open_id, parent=head, layers=layers, delta=delta,
                                              size=size, nfiles=nfiles, finished=now, description=description)
                if not finished:
                    raise CommitNotOpen(f"Commit {open_id} of repo {repo!r} is no longer open.")
                cid = open_id
            else:
                cid = commit_id or new_commit_id()
                commit_rows.insert_finished(tx, Commit(
                    repo=repo, id=cid, branch=branch, parent=head, state="finished", layers=layers, delta=delta,
                    size=size, nfiles=nfiles, created=now, finished=now, description=description or "", origin=origin, job=job,
                ))
            repo_rows.set_head(tx, repo, branch, cid)
            # Subscribers (downstream jobs) act in the same transaction as the
            # commit: a crash can never leave a commit whose pipelines never hear of it.
            for callback in self._landed:
                callback(tx, repo, branch, cid, origin)
            if hook is not None:
                hook(tx, cid)
            if outer is not None:
                return commit_rows.get(tx, repo, cid)
        if not prepared.compacted and len(layers) > index.MAX_LAYERS // 2:
            # Raced: the next commit compacts before it lands, as this one
            # meant to; only a long chain is worth a transaction and a flush now.
            self._compact_if_head(repo, branch, cid)
        return self.repos.get_commit(repo, cid)

    def _prepare(self, base: Commit | None, delta: list[index.Layer], delta_loaded: list, *, compact: bool = False,
                 flush: bool = True) -> "_Prepared":
        """What landing `delta` on `base` makes: the collision (if any), size,
        file count and the bounded layer list of the new commit, compacted
        already with `compact` (outside the lock: the commit then lands in
        one transaction and one flush, not two of each)."""
        base_layers = base.layers if base else []
        base_loaded = [index.load_layer(self.chunks, l) for l in base_layers]
        small_base = all(isinstance(t, smalllayer.SmallLayer) for t in base_loaded)
        if all(isinstance(t, smalllayer.SmallLayer) for t in delta_loaded) and (
                small_base or not any(t.dir_tombstones() for t in delta_loaded)):
            # A few files (most commits), whatever the base: plain Python over a few of
            # the base's rows (an Arrow layer by binary search: index.RowView).  A delta
            # that deletes a directory of an Arrow base takes Arrow's way: it may touch
            # every row below.
            base_rows = [t if isinstance(t, smalllayer.SmallLayer) else index.row_view(l, t) for l, t in zip(base_layers, base_loaded)]
            clash = smalllayer.path_collision(base_rows, delta_loaded)
            size, nfiles = (0, 0) if clash else smalllayer.stats_after(
                base.size if base else 0, base.nfiles if base else 0, base_rows if base else None, delta_loaded)
        else:
            base_tables = [_arrow(self.chunks, l, t) for l, t in zip(base_layers, base_loaded)]
            delta_tables = [_arrow(self.chunks, l, t) for l, t in zip(delta, delta_loaded)]
            clash = index.path_collision(base_tables, delta_tables)
            size, nfiles = (0, 0) if clash else self._stats_after(base, base_tables, delta_tables)
        layers = base_layers + delta
        if clash:
            layers = []
        elif compact:
            layers = self._bounded(index.compact(self.chunks, layers), flush=False)  # land's own flush covers it
        else:
            layers = self._bounded(layers, flush=flush)
        return _Prepared(base.id if base else None, base_layers, clash, size, nfiles, layers, compact)

    def _bounded(self, layers: list[index.Layer], *, flush: bool = True) -> list[index.Layer]:
        """A commit's full index with at most MAX_LAYERS layers.

        Compaction normally runs outside the write lock (before it, or
        after a commit that raced lands).  Racing writers can land on a
        parent whose compaction has not finished yet, and each would inherit its parent's layers plus its
        own: chains of hundreds of layers, each read on every later landing.
        Folding here, whenever the limit is passed, keeps every commit's
        index (and the work of landing on it) bounded.
        """
        if len(layers) <= index.MAX_LAYERS:
            return layers
        while len(layers) > index.MAX_LAYERS:
            # Folding inside the landing transaction keeps every other writer
            # waiting: down to half the bound, so that the next few landings
            # of the race pass without folding.
            layers = index.compact(self.chunks, layers, fold_to=index.MAX_LAYERS // 2)
        if flush:
            self.chunks.sync()  # the merged layer is durable before the commit refers to it
        return layers

    def _stats_after(self, base: Commit | None, base_tables, delta_tables) -> tuple[int, int]:
        """Size and file count of base + delta, touching only the changed paths."""
        new = index.merge(delta_tables)
        added_size, added_count = pc_sum(new["size"]), new.num_rows
        if base is None:
            return added_size, added_count
        touched = [p for t in delta_tables for p in t["path"].to_pylist()]
        old = index.lookup(base_tables, [p for p in touched if not p.endswith("/")])
        replaced = dict(zip(old["path"].to_pylist(), old["size"].to_pylist()))
        for d in (p for p in touched if p.endswith("/")):
            gone = index.under(base_tables, d)
            replaced.update(zip(gone["path"].to_pylist(), gone["size"].to_pylist()))
        return base.size - sum(replaced.values()) + added_size, base.nfiles - len(replaced) + added_count

    def _compact_if_head(self, repo: str, branch: str, commit_id: str) -> None:
        """Compact a commit just landed, unless another has already landed on
        it: then its layers are a parent's, which the child either shares
        (and compacts itself) or has already folded, and the work is wasted."""
        head = commit_rows.head(self.db, repo, branch)
        if head is not None and head.id == commit_id:
            self._compact(head)

    def compact(self, repo: str, commit_id: str) -> None:
        self._compact(self.repos.get_commit(repo, commit_id))

    def _compact(self, commit: Commit) -> None:
        layers = index.compact(self.chunks, commit.layers)
        if layers != commit.layers:
            self.chunks.sync()
            with self.db.write() as tx:
                commit_rows.replace_layers(tx, commit.repo, commit.id, commit.layers, layers)


class _Prepared(NamedTuple):
    head: str | None  # the commit it was prepared on
    base_layers: list[index.Layer]  # and that commit's layers then
    clash: tuple[str, str] | None
    size: int
    nfiles: int
    layers: list[index.Layer]
    compacted: bool


def _collision(repo: str, branch: str, clash: tuple[str, str]) -> PathCollision:
    return PathCollision(
        f"{repo}@{branch}:{clash[0]} would be both a file and a directory ({clash[1]} is beneath it).",
        hint="Delete one of them first (dpl delete-file), or use another name.",
        file=clash[0], beneath=clash[1],
    )


def _arrow(chunks: ChunkStore, layer: index.Layer, loaded):
    return index.read_layer(chunks, layer) if isinstance(loaded, smalllayer.SmallLayer) else loaded


def pc_sum(array) -> int:
    import pyarrow.compute as pc  # only a layer of Arrow format comes here

    return int(pc.sum(array).as_py() or 0)
