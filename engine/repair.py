"""`fsck --repair`: fix what can honestly be fixed, and say what cannot.

A local store keeps one copy of each object, so "repair" never means
inventing bytes.  What it does:

* **Chunks** (damaged or missing) are re-derived when every byte of them
  exists elsewhere: a chunk holds pieces of files, and a file with the same
  content hash may be stored again in other chunks (the same file put in
  another write, a pipeline that copied it) or be found in local directories
  given with `--from`.  The rebuilt bytes must hash to the chunk's id.  A
  damaged chunk that cannot be rebuilt is moved to `quarantine/`: reads then
  say it is missing, and putting the same bytes again restores it.
* **File indexes**: a commit's full index is its parent's plus its own
  layers, compacted.  A damaged compacted layer is rebuilt from those layers;
  a damaged own layer is rebuilt from the commit's full index and its
  parent's.  A commit whose index cannot be rebuilt is lost; branches that
  pointed at it fall back to its nearest readable ancestor.
* **References**: a branch whose head commit no longer exists falls back to
  the newest readable commit made on it; a commit whose parent is gone starts
  its history itself.
* **Job objects**: cached datum outputs whose batch is lost are forgotten (the
  datums run again when next needed); a lost datum list is rebuilt from the
  job's output commit and datum records.
* **Leftovers** of killed processes (temporary files, objects an interrupted
  gc moved aside) are removed or put back.

It is one procedure, in the order fsck's findings must be mended: indexes,
job objects, chunks (engine/rederive.py), references, leftovers; each step
is a short function that the next one relies on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import writers
from .fsck import Report, fsck
from .rederive import quarantine, rederive_chunks
from ..storage import index
from ..storage.errors import Corruption
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import repos as repo_rows

@dataclass
class RepairReport:
    fixed: list[str] = field(default_factory=list)
    unfixed: list[str] = field(default_factory=list)
    after: Report | None = None

    @property
    def ok(self) -> bool:
        return self.after is not None and self.after.ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "fixed": self.fixed, "unfixed": self.unfixed, "after": self.after.to_dict() if self.after else None}


def repair(store, *, sources: list[str] = ()) -> RepairReport:
    out = RepairReport()
    with writers.writing(store):
        if n := store.chunks.restore_trash():
            out.fixed.append(f"Put back {n} object(s) that an interrupted gc had moved aside.")
        before = fsck(store)
        bad_layers = {p.subject for p in before.problems if p.kind in ("bad-index", "missing-index")}
        lost = _rebuild_indexes(store, {bytes.fromhex(s) for s in bad_layers}, out)
        _fix_job_objects(store, [p for p in before.problems if p.kind in ("bad-object", "missing-object")], out)
        bad_chunks = [p for p in before.problems if p.kind in ("damaged-chunk", "missing-chunk")]
        if bad_chunks:
            rederive_chunks(store, {bytes.fromhex(p.subject) for p in bad_chunks}, sources, out.fixed)
        _fix_refs(store, [p for p in before.problems if p.kind == "dangling-ref"], lost, out)
        _remove_leftovers(store, out)
        store.files.clear_caches()  # what this process read before the repair may be stale
    out.after = fsck(store)
    for p in out.after.problems:
        out.unfixed.append(p.message + _advice(p))
    return out


def _advice(problem) -> str:
    affected = f" Affected: {', '.join(problem.affected[:5])}" + (" ..." if len(problem.affected) > 5 else "") + "." if problem.affected else ""
    if problem.kind in ("damaged-chunk", "missing-chunk"):
        return affected + " No other copy of its bytes exists here: put those files again, or run `dpl fsck --repair --from DIR` with a directory holding them."
    if problem.kind in ("bad-index", "missing-index"):
        return affected + " The commits' own file lists are lost with it; delete those commits or restore the store from a backup."
    if problem.kind == "dangling-provenance":
        return affected + " The data is readable, but where it came from cannot be recovered."
    return affected


# ------------------------------------------------------------------ indexes


def _readable(store, layers: list[index.Layer], bad: set[bytes]) -> bool:
    return not any(l.id in bad for l in layers)


def _rebuild_indexes(store, bad: set[bytes], out: RepairReport) -> set[tuple[str, str]]:
    """Rewrite commits' layer lists around damaged layers; return the commits that stay unreadable."""
    lost: set[tuple[str, str]] = set()
    if not bad:
        return lost
    for oid in bad:
        # Out of the way: a rebuilt layer may have the very same id, and must not
        # be taken for already stored.
        quarantine(store, oid)
    rows = sorted(commit_rows.all_commits(store.db), key=lambda c: c.created)
    commits = {(c.repo, c.id): c for c in rows}
    done: dict[tuple[str, str], list[index.Layer]] = {}  # repaired full layers

    def full_of(key) -> list[index.Layer] | None:
        if key in lost:
            return None
        if key in done:
            return done[key]
        c = commits.get(key)
        if c is None:
            return []
        return c.layers if c.state == "finished" else None

    # Parents before children, whatever order they were created in.
    ordered, seen = [], set()
    for key in commits:
        chain = []
        while key in commits and key not in seen:
            chain.append(key)
            seen.add(key)
            parent = commits[key].parent
            key = (key[0], parent) if parent else None
        ordered.extend(reversed(chain))

    for key in ordered:
        c = commits[key]
        own_bad = not _readable(store, c.delta, bad)
        full_bad = c.state == "finished" and not _readable(store, c.layers, bad)
        if not own_bad and not full_bad:
            continue
        parent_layers = full_of((c.repo, c.parent)) if c.parent else []
        if c.state == "open":
            lost.add(key)
            continue
        if own_bad and full_bad:
            lost.add(key)
            continue
        if own_bad:
            # Rebuild the commit's own changes from its full index and its parent's.
            if parent_layers is None:
                lost.add(key)
                continue
            new = _tables(store, c.layers)
            old = _tables(store, parent_layers)
            layer = index.write_layer(store.chunks, _delta(old, new))
            store.chunks.sync()
            with store.db.write() as tx:
                commit_rows.set_delta(tx, c.repo, c.id, [layer])
            out.fixed.append(f"Rebuilt the own file list of commit {c.repo}@{c.id} from its full index.")
            continue
        # Only the full index is damaged: parent's (repaired) index + own layers.
        if parent_layers is None:
            lost.add(key)
            continue
        layers = index.compact(store.chunks, parent_layers + c.delta)
        store.chunks.sync()
        with store.db.write() as tx:
            commit_rows.set_layers(tx, c.repo, c.id, layers)
        done[key] = layers
        out.fixed.append(f"Rebuilt the file index of commit {c.repo}@{c.id} from its layers.")
    return lost


def _tables(store, layers: list[index.Layer]) -> pa.Table:
    return index.merge([index.read_layer(store.chunks, l) for l in layers])


def _delta(old: pa.Table, new: pa.Table) -> pa.Table:
    """A layer that turns `old` into `new`: changed rows plus tombstones."""
    if old.num_rows == 0:
        return new
    key = ["path", "hash", "size"]
    a = old.select(key).append_column("_old", pa.array(np.ones(old.num_rows, bool)))
    joined = new.select(key).append_column("_i", pa.array(np.arange(new.num_rows))).join(a, keys=key, join_type="left outer", use_threads=False)
    changed = joined.filter(pc.is_null(joined["_old"]))["_i"]
    rows = new.take(changed)
    gone = pc.invert(pc.is_in(old["path"], value_set=new["path"].combine_chunks()))
    gone_paths = old.filter(gone)["path"].to_pylist()
    tombs = index.tombstones(gone_paths)
    return index.sort_unique(pa.concat_tables([tombs, rows.select(index.SCHEMA.names)]).combine_chunks())


# ---------------------------------------------------------- job objects, refs


def _fix_job_objects(store, problems, out: RepairReport) -> None:
    for p in problems:
        oid = p.subject
        cached = datum_rows.outputs_in_batch(store.db, oid)
        if cached:
            with store.db.write() as tx:
                datum_rows.forget_batch(tx, oid)
            out.fixed.append(
                f"Forgot the cached outputs of {len(cached)} datum(s) of pipeline {cached[0].pipeline!r} "
                f"(their batch {oid} is lost); they run again when next needed."
            )
        for job in job_rows.with_datum_list(store.db, oid):
            list_id = _rebuild_datum_list(store, job)
            with store.db.write() as tx:
                job_rows.set_datum_list(tx, job.pipeline, job.id, list_id)
            out.fixed.append(f"Rebuilt the datum list of job {job.pipeline}@{job.id} from its output commit and datum records.")


def _rebuild_datum_list(store, job: job_rows.Job) -> str | None:
    from .jobrun import DATUM_LIST_SCHEMA

    ran = {d.datum: d for d in datum_rows.of_job(store.db, job.pipeline, job.id)}
    ids = dict.fromkeys(ran)
    if job.output_commit:
        try:
            table = store.files.commit_table(store.repos.get_commit(job.pipeline, job.output_commit))
            for d in pc.unique(table["datum"]).to_pylist():
                if d is not None:
                    ids.setdefault(d.hex(), None)
        except Exception:
            pass
    if not ids:
        return None
    keys = [ran[d].key if d in ran else "" for d in ids]
    states = [("processed" if ran[d].state == "success" else "failed") if d in ran else "skipped" for d in ids]
    table = pa.table({"datum": pa.array([bytes.fromhex(d) for d in ids], pa.binary(16)), "key": keys, "state": states}, schema=DATUM_LIST_SCHEMA)
    oid = index.write_table(store.chunks, table)
    store.chunks.sync()
    return oid.hex()


def _commit_readable(store, repo: str, cid: str) -> bool:
    commit = commit_rows.get(store.db, repo, cid)
    if commit is None or commit.state != "finished":
        return False
    try:
        for layer in commit.layers:
            index.read_layer(store.chunks, layer)
        return True
    except Corruption:
        return False


def _fix_refs(store, problems, lost, out: RepairReport) -> None:
    for p in problems:
        repo, _, name = p.subject.partition("@")
        if p.message.startswith("Branch"):
            candidates = commit_rows.finished_on(store.db, repo, name)
            target = next((c.id for c in candidates if _commit_readable(store, repo, c.id)), None)
            old = repo_rows.branch(store.db, repo, name).head
            with store.db.write() as tx:
                repo_rows.move_head(tx, repo, name, old, target)
            out.fixed.append(
                f"Moved branch {repo}@{name} from the missing commit {old} back to "
                + (f"{target}, the newest readable commit made on it." if target else "no commit (none made on it is readable).")
            )
        else:
            with store.db.write() as tx:
                commit_rows.set_parent(tx, repo, name, None)
            out.fixed.append(f"Commit {repo}@{name} named a parent that no longer exists: its history now starts at it.")
    # Branches whose head commit cannot be read at all fall back to the nearest readable ancestor.
    for repo, cid in sorted(lost):
        for name in repo_rows.branches_at(store.db, repo, cid):
            target = cid
            while target is not None and not _commit_readable(store, repo, target):
                commit = commit_rows.get(store.db, repo, target)
                target = commit.parent if commit else None
            with store.db.write() as tx:
                repo_rows.move_head(tx, repo, name, cid, target)
            out.fixed.append(
                f"Moved branch {repo}@{name} back from {cid} (its file index is lost) to "
                + (f"its nearest readable ancestor {target}." if target else "no commit (no ancestor is readable).")
            )


def _remove_leftovers(store, out: RepairReport) -> None:
    tmp = store.chunks.tmp
    if not tmp or not os.path.isdir(tmp):
        return
    removed = 0
    for name in os.listdir(tmp):
        parts = name.split(".")
        if len(parts) >= 3 and parts[1].isdigit() and not writers.pid_alive(parts[1]):
            try:
                os.unlink(os.path.join(tmp, name))
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        out.fixed.append(f"Removed {removed} temporary file(s) left by killed writers.")
