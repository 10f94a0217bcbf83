"""Jobs: the waves of work a commit starts, run incrementally and resumably.

A finished user commit starts a *wave*: one job, sharing the commit's global
id, for every pipeline downstream of its branch (created in the commit's own
transaction).  A job may run when no older job of its pipeline and no job of
an upstream pipeline in its wave is still unfinished, which runs each wave
in DAG order and each pipeline's waves in commit order.

Running a job:
1. pin its input commits (the wave's commit where the wave touched the repo,
   else the branch head) and record them, so a resumed job sees the same data;
2. cut them into datums (`datums`), each with an id that hashes the
   transform with the input files;
3. compare with the datums of the job that made the current output: equal
   ids are carried forward, ids that disappeared take their outputs with
   them, and of the new ids only those never processed before are run;
4. run those on the executor, `datum_tries` times at most, recording each
   datum's outputs as it finishes (a killed runner redoes none of them);
5. land the output commit (previous output + tombstones + new outputs) and
   the job's success in one transaction.

Two runners never hold one job: a job is claimed by compare-and-swap on its
owner, kept by a heartbeat, and taken over when its owner has died.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import code as code_mod
from . import datums as datums_mod
from .executors import get_executor
from .executors.base import DatumResult, JobContext
from .waves import Graph
from .writers import pid_alive, writes_objects
from ..storage import index
from ..storage.errors import Conflict, DplError, PathCollision
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from .errors import DatumNotFound, JobFailed, JobNotFound

log = logging.getLogger("dpl")

LEASE_SECONDS = 30.0
HEARTBEAT_SECONDS = 2.0
FLUSH_SECONDS = 1.0
FLUSH_DATUMS = 500
LOG_TAIL = 2000  # characters of a failed datum's log quoted in the job's error
UNFINISHED = ("created", "running")
DATUM_LIST_SCHEMA = pa.schema([("datum", pa.binary(16)), ("key", pa.string()), ("state", pa.string())])

Progress = Callable[[dict, int, int], None]  # (job, datums done, datums total)


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_held(job: job_rows.Job, now: float) -> bool:
    """Whether a running job's owner still holds it.  On this machine the
    owner's pid says so (a heartbeat can be late under load, and taking over
    a live runner would run its datums twice; only a heartbeat silent for
    many leases means the pid was reused); elsewhere only a fresh heartbeat can."""
    host = (job.owner or "").split(":")[0]
    if host == socket.gethostname():
        return _owner_alive(job.owner) and (job.heartbeat or 0) > now - 20 * LEASE_SECONDS
    return (job.heartbeat or 0) > now - LEASE_SECONDS


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, pid, _ = (owner.split(":") + ["", ""])[:3]
    if host != socket.gethostname():
        return True  # another machine: only its heartbeat can tell
    return pid_alive(pid)


class JobOps:
    """Mixed into `Store`: the job runner, and reading jobs and datums."""

    # ---------------------------------------------------------------- runner

    def run_jobs(self, wave: str | None = None, *, executor: str | None = None, progress: Progress | None = None, wait: bool = True) -> list[dict]:
        """Run every runnable job until the wave `wave` (or all work) is done.

        Returns the jobs this call ran.  With `wait`, jobs held by another
        live runner are waited for; a runner that died is taken over.
        """
        ran = []
        owner = _owner_id()
        while True:
            if wave is not None and not self._unfinished(wave):
                break
            job = self._claim(owner)
            if job is not None:
                ran.append(self._run_claimed(job, owner, executor, progress))
                continue
            if not wait or not self._unfinished(wave):
                break
            time.sleep(0.2)
        return ran

    def _unfinished(self, wave: str | None) -> bool:
        return job_rows.any_unfinished(self.db, wave)

    def _claim(self, owner: str) -> job_rows.Job | None:
        with self.db.write() as tx:
            rows = job_rows.unfinished(tx)  # oldest first
            if not rows:
                return None
            graph = Graph(tx)
            now = time.time()
            seen_pipelines: set[str] = set()
            for r in rows:
                first_of_pipeline = r.pipeline not in seen_pipelines
                seen_pipelines.add(r.pipeline)
                if not first_of_pipeline:
                    continue  # an older job of this pipeline comes first
                if r.state == "running" and _lease_held(r, now):
                    continue
                ups = graph.upstream(r.pipeline) if r.pipeline in graph.pipelines else set()
                if any(o.id == r.id and o.pipeline in ups for o in rows):
                    continue  # an upstream job of the same wave is not done yet
                bad = [p for p in job_rows.unsuccessful_in_wave(tx, r.id) if p in ups]
                if bad or r.pipeline not in graph.pipelines:
                    why = f"upstream job {bad[0]}@{r.id[:12]} did not succeed" if bad else "the pipeline was deleted"
                    job_rows.mark_unrunnable(tx, r.pipeline, r.id, now, why)
                    continue
                job_rows.claim(tx, r.pipeline, r.id, owner, now)
                return job_rows.get(tx, r.pipeline, r.id)
        return None

    @writes_objects
    def _run_claimed(self, job: job_rows.Job, owner: str, executor: str | None, progress: Progress | None) -> dict:
        stop = threading.Event()

        def beat():
            while not stop.wait(HEARTBEAT_SECONDS):
                with self.db.write() as tx:
                    job_rows.beat(tx, job.pipeline, job.id, owner, time.time())

        heart = threading.Thread(target=beat, daemon=True)
        heart.start()
        try:
            _JobRun(self, job, owner, executor, progress).run()
        except DplError as e:
            self._fail(job, owner, e.message)
        except Exception as e:
            self._fail(job, owner, f"internal error: {type(e).__name__}: {e}")
            raise
        finally:
            stop.set()
            heart.join()
        return self.inspect_job(job.pipeline, job.id)

    def _fail(self, job: job_rows.Job, owner: str, message: str) -> None:
        with self.db.write() as tx:
            job_rows.fail(tx, job.pipeline, job.id, owner, time.time(), message)

    # ------------------------------------------------------------------ read

    def _job_row(self, pipeline: str | None, job: str) -> job_rows.Job:
        rows = job_rows.by_prefix(self.db, job, pipeline)
        if not rows:
            raise JobNotFound(f"No job {job!r}" + (f" of pipeline {pipeline!r}." if pipeline else "."), hint="See `dpl list-job`.")
        if len(rows) > 1:
            names = ", ".join(sorted(f"{r.pipeline}@{r.id[:12]}" for r in rows)[:5])
            raise JobNotFound(f"{job!r} names several jobs ({names}).", hint="Write PIPELINE@JOB.")
        return rows[0]

    def inspect_job(self, pipeline: str | None, job: str) -> dict:
        return _job_dict(self._job_row(pipeline, job))

    def list_jobs(self, pipeline: str | None = None, wave: str | None = None, limit: int | None = None) -> list[dict]:
        if pipeline:
            self._pipeline_row(pipeline)
        return [_job_dict(r) for r in job_rows.listing(self.db, pipeline, wave, limit)]

    def list_datums(self, pipeline: str | None, job: str) -> list[dict]:
        """Every datum of a job: the ones it ran and the ones it skipped."""
        row = self._job_row(pipeline, job)
        ran = {d.datum: d for d in datum_rows.of_job(self.db, row.pipeline, row.id)}
        out = []
        if row.datum_list:
            table = index.read_table(self.chunks, bytes.fromhex(row.datum_list))
            for d, key, state in zip(table["datum"].to_pylist(), table["key"].to_pylist(), table["state"].to_pylist()):
                r = ran.pop(d.hex(), None)
                out.append(_datum_dict(r) if r is not None else {"datum": d.hex(), "key": key, "state": state, "job": row.id})
        out.extend(_datum_dict(r) for r in ran.values())
        return out

    def inspect_datum(self, pipeline: str | None, job: str, datum: str) -> dict:
        row = self._job_row(pipeline, job)
        rows = datum_rows.by_prefix(self.db, row.pipeline, datum)
        mine = [r for r in rows if r.job == row.id] or rows
        if not mine:
            raise DatumNotFound(f"Datum {datum!r} was not processed by pipeline {row.pipeline!r}.", hint=f"See `dpl list-datum {row.pipeline}@{row.id[:12]}`.")
        info = _datum_dict(mine[0], full=True)
        if mine[0].job != row.id:
            info["carried_from_job"] = mine[0].job
        return info

    def datum_logs(self, pipeline: str | None, job: str, datum: str | None = None) -> list[dict]:
        row = self._job_row(pipeline, job)
        rows = datum_rows.of_job(self.db, row.pipeline, row.id, datum, order="started")
        if datum and not rows:
            raise DatumNotFound(f"Job {row.id[:12]} of {row.pipeline!r} ran no datum {datum!r}.", hint="See `dpl list-datum`.")
        return [{"pipeline": r.pipeline, "job": r.job, "datum": r.datum, "key": r.key, "state": r.state,
                 "stdout": r.stdout or "", "stderr": r.stderr or ""} for r in rows]


def _job_dict(r: job_rows.Job) -> dict:
    return {
        "pipeline": r.pipeline,
        "id": r.id,
        "version": r.version,
        "state": r.state,
        "reason": r.reason,
        "created": r.created,
        "started": r.started,
        "finished": r.finished,
        "duration": (r.finished - r.started) if r.finished and r.started else None,
        "inputs": r.inputs,
        "output_commit": r.output_commit,
        "executor": r.executor,
        "code": r.code,
        "total": r.total,
        "processed": r.processed,
        "skipped": r.skipped,
        "failed": r.failed,
        "error": r.error,
    }


def _datum_dict(r: datum_rows.Datum, full: bool = False) -> dict:
    d = {
        "datum": r.datum,
        "job": r.job,
        "key": r.key,
        "state": r.state,
        "reason": r.reason,
        "started": r.started,
        "finished": r.finished,
        "duration": (r.finished - r.started) if r.finished and r.started else None,
        "tries": r.tries,
        "exit_code": r.exit_code,
        "outputs": r.outputs,
        "error": r.error,
    }
    if full:
        d["inputs"] = r.inputs
    return d


class _JobRun:
    """One attempt at running one claimed job."""

    def __init__(self, store, job: job_rows.Job, owner: str, executor: str | None, progress: Progress | None):
        self.store, self.job, self.owner, self.progress = store, job, owner, progress
        self.pipeline, self.wave = job.pipeline, job.id
        self.spec = store.pipeline_spec(self.pipeline, job.version)
        self.pipeline_version = pipeline_rows.version(store.db, self.pipeline, job.version)
        self.kind = executor or self.spec.executor or store.config.get("executor", "local")
        self.code: dict = {}  # the fingerprint of the step's host code, taken in run()

    # ------------------------------------------------------------------ plan

    def _pin_inputs(self) -> list[dict]:
        pinned = list(self.job.inputs)
        if pinned:
            return pinned
        db = self.store.db
        for p in self.spec.pfs_inputs():
            # The wave's own commit where the wave touched this repo, else the head.
            own = commit_rows.get(db, p.repo, self.wave)
            if own is not None and own.branch == p.branch and own.state == "finished":
                commit = own.id
            else:
                branch = repo_rows.branch(db, p.repo, p.branch)
                commit = branch.head if branch else None
            pinned.append({"name": p.name, "repo": p.repo, "branch": p.branch, "commit": commit})
        with db.write() as tx:
            job_rows.set_inputs(tx, self.pipeline, self.wave, pinned)
        return pinned

    def _salt(self, info: dict) -> str:
        parts = [self.spec.transform_hash(), info.get("image_digest", ""), str(self.pipeline_version.reprocess if self.pipeline_version else 0)]
        if self.code:  # absent for a step without host code: those datum ids stay as they were
            parts.append(self.code["hash"])
        if self.spec.reprocess_every_job:
            parts.append(self.wave)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def run(self) -> None:
        store = self.store
        pins = self._pin_inputs()
        scratch = store.root / "tmp" / "jobs" / f"{self.pipeline}-{self.wave[:12]}-{self.owner.rsplit(':', 1)[-1]}"
        code_dir = self.pipeline_version.code.get("dir") if self.pipeline_version else None
        self.code = code_mod.fingerprint(self.spec, code_dir, self.kind)
        timeout = self.spec.job_timeout
        started = self.job.started or time.time()
        ctx = JobContext(
            job=self.wave, pipeline=self.pipeline, spec=self.spec, store_root=store.root, chunks=store.chunks,
            config=store.config, scratch=scratch, code_dir=code_dir,
            deadline=started + timeout if timeout else None,
        )
        ctx.secrets, ctx.secret_files = store.resolve_secrets(self.spec) if hasattr(store, "resolve_secrets") else ({}, {})
        executor = get_executor(self.kind, store.config)
        info = executor.start(ctx)
        try:
            self._run(ctx, executor, info, pins)
        finally:
            executor.stop(ctx)
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(self, ctx: JobContext, executor, info: dict, pins: list[dict]) -> None:
        store = self.store
        salt = self._salt(info)
        pinned = []
        for p, pin in zip(self.spec.pfs_inputs(), pins):
            table = store.commit_table(store.get_commit(p.repo, pin["commit"])) if pin["commit"] else index.EMPTY
            pinned.append(datums_mod.pin(p, pin["commit"], table))
        dset = datums_mod.build(self.spec, pinned, salt)
        with store.db.write() as tx:
            job_rows.set_plan(tx, self.pipeline, self.wave, salt=salt, executor=info, code=self.code, total=len(dset))

        prev_commit, prev_job = self._previous_output()
        ids = pa.array(dset.ids, pa.binary(16))
        prev_ids, prev_keys = self._prev_datums(prev_job)
        in_prev = pc.is_in(ids, value_set=prev_ids).to_numpy(zero_copy_only=False) if len(prev_ids) else np.zeros(len(dset), bool)
        candidates = np.flatnonzero(~in_prev).tolist()
        cached = self._cached([dset.ids[i].hex() for i in candidates])
        to_run = [i for i in candidates if dset.ids[i].hex() not in cached]
        resumed = sum(1 for i in candidates if self._ran_here(cached.get(dset.ids[i].hex())))
        removed = prev_ids.filter(pc.invert(pc.is_in(prev_ids, value_set=ids))) if len(prev_ids) else prev_ids

        reasons = self._reasons(dset, to_run, prev_keys, prev_job, salt)
        recorder = _Recorder(store, self.pipeline, self.wave)
        done = len(dset) - len(to_run)
        self._report(done, len(dset))
        failure = self._execute(ctx, executor, dset, to_run, reasons, recorder, done)
        recorder.flush()
        processed = len(to_run) + resumed
        skipped = len(dset) - processed
        states = np.full(len(dset), "skipped", dtype=object)
        for i in to_run:
            states[i] = "processed"
        for i in candidates:
            if self._ran_here(cached.get(dset.ids[i].hex())):
                states[i] = "processed"
        for i in recorder.failed_index:
            states[i] = "failed"
        datum_list = pa.table(
            {"datum": ids, "key": pa.array(dset.keys(), pa.string()), "state": pa.array(states.tolist(), pa.string())},
            schema=DATUM_LIST_SCHEMA,
        )
        list_id = index.write_table(store.chunks, datum_list).hex()
        with store.db.write() as tx:
            job_rows.set_outcome(tx, self.pipeline, self.wave, datum_list=list_id, processed=processed - len(recorder.failed_index),
                                 skipped=skipped, failed=len(recorder.failed_index))
        if failure:
            raise JobFailed(failure)
        self._land(dset, candidates, removed, prev_commit)

    def _report(self, done: int, total: int) -> None:
        if self.progress:
            self.progress({"pipeline": self.pipeline, "id": self.wave}, done, total)

    def _previous_output(self):
        """The output branch's head commit, and the job that made it if that job succeeded."""
        store = self.store
        branch = repo_rows.branch(store.db, self.pipeline, self.spec.output_branch)
        if branch is None or branch.head is None:
            return None, None
        commit = store.get_commit(self.pipeline, branch.head)
        job = job_rows.get(store.db, self.pipeline, commit.job) if commit.job else None
        return commit, job if job is not None and job.state == "success" else None

    def _prev_datums(self, prev_job: job_rows.Job | None):
        if prev_job is None or not prev_job.datum_list:
            return pa.array([], pa.binary(16)), {}
        table = index.read_table(self.store.chunks, bytes.fromhex(prev_job.datum_list))
        return table["datum"].combine_chunks(), None if table.num_rows > 200_000 else table

    def _cached(self, hex_ids: list[str]) -> dict[str, datum_rows.DatumOutput]:
        """Where the outputs of these datums are, for those already processed by some job."""
        return datum_rows.outputs_of(self.store.db, self.pipeline, hex_ids)

    def _ran_here(self, output: datum_rows.DatumOutput | None) -> bool:
        """Whether this job itself ran the datum (before it was resumed)."""
        return output is not None and output.job == self.wave

    def _reasons(self, dset, to_run: list[int], prev_table, prev_job, salt: str) -> dict[int, str]:
        """Why each datum runs: what a user asks when a job does more than expected."""
        if not to_run:
            return {}
        if prev_job is None:
            return {i: "new input" for i in to_run}
        if prev_job.salt != salt:
            return {i: self._why_all(prev_job) for i in to_run}
        prev_by_key = {}
        if prev_table is not None and len(to_run) < 10_000:
            wanted = pa.array(sorted({dset.key(i) for i in to_run}), pa.string())
            hits = prev_table.filter(pc.is_in(prev_table["key"], value_set=wanted))
            prev_by_key = {k: d.hex() for d, k in zip(hits["datum"].to_pylist(), hits["key"].to_pylist())}
        failed_before = set()
        if len(to_run) < 10_000:
            failed_before = datum_rows.failed_among(self.store.db, self.pipeline, [dset.ids[j].hex() for j in to_run])
        out = {}
        for i in to_run:
            key = dset.key(i)
            if dset.ids[i].hex() in failed_before:
                out[i] = "retried after failure"
            elif key in prev_by_key:
                out[i] = "changed content: " + self._changed_files(dset, i, prev_by_key[key])
            else:
                out[i] = "new input"
        return out

    def _why_all(self, prev_job: job_rows.Job) -> str:
        """Why a job reruns every datum: the ids' salt changed since the last job."""
        if self.job.reason == "reprocess":
            return "reprocess requested"
        if prev_job.version == self.job.version or self._same_transform(prev_job.version):
            changed = code_mod.changed_files(prev_job.code or {}, self.code)
            if changed:
                return "code changed: " + ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return "spec changed"

    def _same_transform(self, version: int) -> bool:
        row = pipeline_rows.version(self.store.db, self.pipeline, version)
        return row is not None and row.transform_hash == self.spec.transform_hash()

    def _changed_files(self, dset, i: int, prev_datum: str) -> str:
        prev = datum_rows.any_run(self.store.db, self.pipeline, prev_datum)
        if prev is None:
            return dset.key(i)
        before = {(inp["name"], f[0]): f[1] for inp in prev.inputs for f in inp["files"]}
        now = {}
        for p, u in dset.tuples[i]:
            pin = dset.inputs[p]
            unit = pin.matches.unit(u)
            for path, h in zip(unit["path"].to_pylist(), unit["hash"].to_pylist()):
                now[(pin.name, path)] = h.hex()
        changed = sorted(f"{n}:{p}" for (n, p), h in now.items() if before.get((n, p)) != h)
        changed += sorted(f"{n}:{p} (deleted)" for (n, p) in before if (n, p) not in now)
        return ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "") if changed else dset.key(i)

    # --------------------------------------------------------------- execute

    def _execute(self, ctx, executor, dset, to_run, reasons, recorder, done: int) -> str | None:
        """Run datums with retries; return the job's error, if it failed."""
        if not to_run:
            return None
        tries_allowed = self.spec.datum_tries
        failure: list[str] = []
        lock = threading.Lock()
        # Every secret the store holds, not only this spec's: a step may print one it found elsewhere.
        secrets = self.store_secrets()
        counter = [done]

        def one(i: int):
            task = dset.task(i, self.wave, self.pipeline)
            result = None
            for attempt in range(1, tries_allowed + 1):
                if ctx.cancelled.is_set() and result is not None:
                    break
                try:
                    result = executor.run_datum(ctx, task)
                except DplError as e:
                    result = DatumResult(task.datum, None, error=e.message, started=time.time(), finished=time.time())
                if result.ok or ctx.cancelled.is_set() or ctx.time_left() == 0:
                    break
            recorder.add(i, dset, task, result, attempt, reasons.get(i, "new input"), secrets)
            with lock:
                counter[0] += 1
                self._report(counter[0], len(dset))
                if not result.ok and not failure:
                    failure.append(self._datum_error(task, result, attempt))

        slots = max(1, executor.slots(ctx))
        pending = iter(to_run)
        with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="datum") as pool:
            running = set()
            for i in pending:
                running.add(pool.submit(one, i))
                if len(running) >= slots:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for f in finished:
                        f.result()
                    if failure or ctx.time_left() == 0:
                        break
            for f in running:
                f.result()
        if ctx.time_left() == 0 and not failure:
            return f"Job {self.wave[:12]} of pipeline {self.pipeline!r} timed out after {self.spec.raw['job_timeout']} (job_timeout)."
        return failure[0] if failure else None

    def _datum_error(self, task, result: DatumResult, tries: int) -> str:
        log_text, error = (result.stderr or result.stdout or b"").decode("utf-8", "replace"), str(result.error)
        for value in self.store_secrets():  # scrubbed whole, before the cut, so no part of a value survives
            log_text, error = log_text.replace(value, "***"), error.replace(value, "***")
        tail = log_text[-LOG_TAIL:].strip()
        code = f" (exit code {result.exit_code})" if result.exit_code not in (None, 0) and "code" not in (result.error or "") else ""
        return (
            f"Datum {task.datum[:12]} of pipeline {self.pipeline!r} failed after {tries} "
            f"{'try' if tries == 1 else 'tries'}: {error}{code}." + (f"\n--- log tail ---\n{tail}" if tail else "")
        )

    def store_secrets(self) -> list[str]:
        """Every value of every secret the store holds, longest first: what no log or job error may show."""
        return self.store.secret_values()

    # ------------------------------------------------------------------ land

    def _land(self, dset, new: list[int], removed: pa.Array, prev_commit) -> None:
        """Output = previous output - outputs of removed datums + outputs of new ones."""
        store = self.store
        base = store.commit_table(prev_commit) if prev_commit is not None else index.EMPTY
        parts, tomb_paths = [], []
        if prev_commit is not None and prev_commit.job is None:
            tomb_paths = ["/"]  # the output branch holds files no job made: replace them all
            base = index.EMPTY
        elif len(removed) and base.num_rows:
            gone = base.filter(pc.is_in(base["datum"], value_set=removed))
            tomb_paths = gone["path"].to_pylist()
            base = base.filter(pc.invert(pc.is_in(base["datum"], value_set=removed)))
        new_ids = [dset.ids[i].hex() for i in new]
        outputs = self._outputs_of(new_ids)
        if outputs.num_rows:
            parts.append(outputs)
        self._check_duplicates(outputs, base)
        tombs = index.tombstones(tomb_paths)
        delta = pa.concat_tables([tombs] + [p.select(index.SCHEMA.names) for p in parts]) if parts else tombs
        delta = index.sort_unique(delta.combine_chunks()) if delta.num_rows else delta
        layers = [index.write_layer(store.chunks, delta)] if delta.num_rows else []

        def finish(tx, cid):
            if not job_rows.succeed(tx, self.pipeline, self.wave, self.owner, time.time(), cid):
                # taken over meanwhile: the new owner lands it, not us (this rolls back)
                raise Conflict(f"Job {self.wave[:12]} of pipeline {self.pipeline!r} was taken over by another runner.")

        commit_id = uuid.uuid4().hex if commit_rows.exists(store.db, self.pipeline, self.wave) else self.wave
        try:
            store._land(
                self.pipeline, self.spec.output_branch, layers, description=f"output of job {self.wave[:12]}",
                commit_id=commit_id, origin="auto", job=self.wave, hook=finish,
            )
        except PathCollision as e:  # the landing's own check; here we know which datums wrote what
            def writer(path: str) -> str:
                for table in (outputs, base):
                    rows = table.filter(pc.equal(table["path"], path))
                    if rows.num_rows:
                        return rows["datum"][0].as_py().hex()[:12]
                return "?"

            raise JobFailed(
                f"Job {self.wave[:12]} of pipeline {self.pipeline!r} failed: {e.file} was written as a file by datum "
                f"{writer(e.file)} and as a directory (holding {e.beneath}) by datum {writer(e.beneath)}."
            ) from None

    def _outputs_of(self, hex_ids: list[str]) -> pa.Table:
        """The output rows of these datums, from the batches they were recorded in."""
        rows = self._cached(hex_ids)
        by_batch: dict[str, list[tuple[int, int]]] = {}
        for r in rows.values():
            if r.count:
                by_batch.setdefault(r.batch, []).append((r.start, r.count))
        tables = []
        for batch, spans in by_batch.items():
            table = index.read_table(self.store.chunks, bytes.fromhex(batch))
            take = np.concatenate([np.arange(s, s + c) for s, c in sorted(spans)])
            tables.append(table.take(pa.array(take)))
        if not tables:
            return index.EMPTY
        return pa.concat_tables(tables).combine_chunks()

    def _check_duplicates(self, outputs: pa.Table, base: pa.Table) -> None:
        """Pachyderm 2's rule: two datums may not write the same path."""
        if outputs.num_rows == 0:
            return
        counts = outputs.group_by("path").aggregate([("path", "count")])
        dup = counts.filter(pc.greater(counts["path_count"], 1))
        if dup.num_rows:
            path = dup["path"][0].as_py()
            owners = outputs.filter(pc.equal(outputs["path"], path))["datum"].to_pylist()
            raise JobFailed(self._dup_message(path, owners[0], owners[1]))
        if base.num_rows:
            clash = base.filter(pc.is_in(base["path"], value_set=outputs["path"]))
            if clash.num_rows:
                path = clash["path"][0].as_py()
                other = outputs.filter(pc.equal(outputs["path"], path))["datum"][0].as_py()
                raise JobFailed(self._dup_message(path, clash["datum"][0].as_py(), other))

    def _dup_message(self, path: str, a: bytes, b: bytes) -> str:
        return (
            f"Job {self.wave[:12]} of pipeline {self.pipeline!r} failed: duplicate path output by different datums: "
            f"{path} was written by datum {a.hex()[:12]} and by datum {b.hex()[:12]}."
        )


class _Recorder:
    """Buffers finished datums and records them in batches.

    Outputs of many datums share one Arrow table object (a datum is a row
    range of it); the datum records, their output ranges and their lineage
    are written in one transaction per batch, after the chunks are durable.
    """

    def __init__(self, store, pipeline: str, job: str):
        self.store, self.pipeline, self.job = store, pipeline, job
        self.lock = threading.Lock()
        self.pending: list[tuple] = []
        self.failed_index: list[int] = []
        self.last_flush = time.time()

    def add(self, i: int, dset, task, result: DatumResult, tries: int, reason: str, secrets: list[str]) -> None:
        def scrub(b: bytes) -> str:
            text = b.decode("utf-8", "replace")
            for value in secrets:  # longest first: a value inside another is not left half shown
                text = text.replace(value, "***")
            return text

        if result.error:
            result.error = scrub(result.error.encode())

        inputs = [
            {"name": inp.name, "repo": inp.repo, "commit": inp.commit, "path": inp.match,
             "files": [[f["path"], f["hash"].hex(), f["size"]] for f in inp.files]}
            for inp in task.inputs
        ]
        record = (i, task.datum, dset.key(i), result, tries, reason, inputs, scrub(result.stdout), scrub(result.stderr))
        with self.lock:
            self.pending.append(record)
            if not result.ok:
                self.failed_index.append(i)
            if len(self.pending) >= FLUSH_DATUMS or time.time() - self.last_flush > FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self.last_flush = time.time()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        tables, spans, start = [], {}, 0
        for _, datum, _, result, *_ in pending:
            if result.ok and result.outputs is not None:
                t = result.outputs
                n = t.num_rows
                t = t.set_column(t.schema.get_field_index("datum"), "datum", pa.array([bytes.fromhex(datum)] * n, pa.binary(16)))
                tables.append(t)
                spans[datum] = (start, n)
                start += n
        batch = index.write_table(self.store.chunks, pa.concat_tables(tables)).hex() if start else ""
        self.store.chunks.sync()
        runs, outputs, reads = [], [], []
        for _, datum, key, result, tries, reason, inputs, stdout, stderr in pending:
            s, n = spans.get(datum, (0, 0))
            runs.append(datum_rows.Datum(
                pipeline=self.pipeline, job=self.job, datum=datum, key=key, state="success" if result.ok else "failed",
                reason=reason, started=result.started, finished=result.finished, tries=tries, exit_code=result.exit_code,
                stdout=stdout, stderr=stderr, error=result.error, outputs=n, inputs_json=json.dumps(inputs),
            ))
            if result.ok:
                outputs.append(datum_rows.DatumOutput(self.pipeline, datum, batch, s, n, self.job))
                reads += [datum_rows.Read(inp["repo"], f[0], f[1], self.pipeline, datum) for inp in inputs for f in inp["files"]]
        with self.store.db.write() as tx:
            datum_rows.record(tx, runs, outputs, reads)
