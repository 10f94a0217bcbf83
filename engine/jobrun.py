"""Running one claimed job: `JobRun`, made by `jobs.Jobs` for each job it claims.

1. pin its input commits (the wave's commit where the wave touched the repo,
   else the branch head) and record them, so a resumed job sees the same data;
2. cut them into datums (`datums`), each with an id that hashes the
   transform with the input files;
3. compare with the datums of the job that made the current output: equal
   ids are carried forward, ids that disappeared take their outputs with
   them, and of the new ids only those never processed before are run;
4. run every one of those on the executor, `datum_tries` times at most,
   even after one fails, recording each datum's outputs as it finishes
   (`recorder.Recorder`: a killed or stopped runner redoes none of them);
5. if any failed, fail the job naming each (`failures`); else land the
   output commit (previous output + tombstones + new outputs) and the job's
   success in one transaction.

Ctrl-C (KeyboardInterrupt in the thread running the job) kills the running
steps at once, records what finished, and leaves the job to be resumed.
`stop` (called by the job's `lease.Lease` when `dpl stop-job` killed the job,
from this process or another) does the same from another thread and ends
the run with `Stopped`: what finished is kept, so a later job of the
pipeline skips it and runs only the rest.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import code as code_mod
from . import datums as datums_mod
from . import failures
from . import reasons as reasons_mod
from .executors import get_executor
from .executors.base import DatumResult, JobContext
from .recorder import Recorder
from ..storage import index
from ..storage.errors import Conflict, DplError, PathCollision
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from .errors import JobFailed

if TYPE_CHECKING:
    from .jobs import Jobs

# A job's datum list: every datum, its key and what really happened to it in that job
# (`failures`: success, failed, skipped or not-run), listed by `list_datums`.
DATUM_LIST_SCHEMA = pa.schema([("datum", pa.binary(16)), ("key", pa.string()), ("state", pa.string())])

Progress = Callable[[dict, int, int], None]  # (job, datums done, datums total)


class Stopped(Exception):
    """The run ended because the job stopped being this runner's (killed by `dpl stop-job`,
    or taken over); whoever did that wrote the job's state, so the runner writes none."""


class JobRun:
    """One attempt at running one claimed job."""

    def __init__(self, jobs: "Jobs", job: job_rows.Job, owner: str, executor: str | None, progress: Progress | None):
        self.jobs, self.job, self.owner, self.progress = jobs, job, owner, progress
        self.pipeline, self.wave = job.pipeline, job.id
        self.spec = jobs.spec(self.pipeline, job.version)
        self.pipeline_version = pipeline_rows.version(jobs.db, self.pipeline, job.version)
        self.kind = executor or self.spec.executor or jobs.config.get("executor", "local")
        self.code: dict = {}  # the fingerprint of the step's host code, taken in run()
        self.cancelled = threading.Event()  # the JobContext's: set by Ctrl-C or `stop`
        self.stopped: str | None = None  # why `stop` was called
        self._live: tuple | None = None  # (executor, ctx) while the executor is started
        self._lock = threading.Lock()

    def stop(self, why: str) -> None:
        """End the run from another thread: no datum starts any more and the running steps are killed now."""
        with self._lock:
            self.stopped = why
            self.cancelled.set()
            live = self._live
        if live is not None:
            executor, ctx = live
            executor.cancel(ctx)

    # ------------------------------------------------------------------ plan

    def _pin_inputs(self) -> list[dict]:
        pinned = list(self.job.inputs)
        if pinned:
            return pinned
        db = self.jobs.db
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
        jobs = self.jobs
        pins = self._pin_inputs()
        scratch = jobs.root / "tmp" / "jobs" / f"{self.pipeline}-{self.wave[:12]}-{self.owner.rsplit(':', 1)[-1]}"
        code_dir = self.pipeline_version.code.get("dir") if self.pipeline_version else None
        self.code = code_mod.fingerprint(self.spec, code_dir, self.kind)
        timeout = self.spec.job_timeout
        started = self.job.started or time.time()
        ctx = JobContext(
            job=self.wave, pipeline=self.pipeline, spec=self.spec, store_root=jobs.root, chunks=jobs.chunks,
            config=jobs.config, scratch=scratch, code_dir=code_dir,
            deadline=started + timeout if timeout else None, cancelled=self.cancelled,
        )
        ctx.secrets, ctx.secret_files = jobs.secrets.resolve_secrets(self.spec)
        executor = get_executor(self.kind, jobs.config)
        info = executor.start(ctx)
        with self._lock:
            self._live = (executor, ctx)
        try:
            self._run(ctx, executor, info, pins)
        finally:
            with self._lock:
                self._live = None
            executor.stop(ctx)
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(self, ctx: JobContext, executor, info: dict, pins: list[dict]) -> None:
        jobs = self.jobs
        salt = self._salt(info)
        pinned = []
        for p, pin in zip(self.spec.pfs_inputs(), pins):
            table = jobs.files.commit_table(jobs.repos.get_commit(p.repo, pin["commit"])) if pin["commit"] else index.EMPTY
            pinned.append(datums_mod.pin(p, pin["commit"], table))
        dset = datums_mod.build(self.spec, pinned, salt)
        with jobs.db.write() as tx:
            job_rows.set_plan(tx, self.pipeline, self.wave, salt=salt, executor=info, code=self.code, total=len(dset))

        prev_commit, prev_job = self._previous_output()
        ids = pa.array(dset.ids, pa.binary(16))
        prev_ids, prev_keys = self._prev_datums(prev_job)
        in_prev = pc.is_in(ids, value_set=prev_ids).to_numpy(zero_copy_only=False) if len(prev_ids) else np.zeros(len(dset), bool)
        candidates = np.flatnonzero(~in_prev).tolist()
        cached = self._cached([dset.ids[i].hex() for i in candidates])
        to_run = [i for i in candidates if dset.ids[i].hex() not in cached]
        resumed = [i for i in candidates if self._ran_here(cached.get(dset.ids[i].hex()))]
        removed = prev_ids.filter(pc.invert(pc.is_in(prev_ids, value_set=ids))) if len(prev_ids) else prev_ids

        reasons = reasons_mod.reasons(self, dset, to_run, prev_keys, prev_job, salt)
        recorder = Recorder(jobs.db, jobs.chunks, self.pipeline, self.wave)
        done = len(dset) - len(to_run)
        self._report(done, len(dset))
        try:
            ran_failed = self._execute(ctx, executor, dset, to_run, reasons, recorder, done)
        except BaseException:
            # Stopped (Ctrl-C) or broken: what finished is kept, and the list says what did not run.
            recorder.flush()
            self._record_outcome(dset, ids, to_run, resumed, recorder)
            raise
        recorder.flush()
        not_run = self._record_outcome(dset, ids, to_run, resumed, recorder)
        if self.stopped:
            raise Stopped(self.stopped)
        if ran_failed or not_run:
            timed_out = self.spec.raw.get("job_timeout") if ctx.time_left() == 0 else None
            raise JobFailed(failures.job_error(self.pipeline, self.wave, ran_failed, total=len(dset), not_run=not_run,
                                               timed_out=timed_out, secrets=self.store_secrets()))
        self._land(dset, candidates, removed, prev_commit)

    def _record_outcome(self, dset, ids: pa.Array, to_run: list[int], resumed: list[int], recorder: Recorder) -> int:
        """Write the job's datum list, each datum with what really happened to it, and its counts; return how many did not run."""
        states = np.full(len(dset), failures.SKIPPED, dtype=object)
        states[to_run] = failures.NOT_RUN
        succeeded = list(recorder.ok_index) + resumed
        states[succeeded] = failures.SUCCESS
        states[list(recorder.failed_index)] = failures.FAILED
        datum_list = pa.table(
            {"datum": ids, "key": pa.array(dset.keys(), pa.string()), "state": pa.array(states.tolist(), pa.string())},
            schema=DATUM_LIST_SCHEMA,
        )
        list_id = index.write_table(self.jobs.chunks, datum_list).hex()
        self.jobs.chunks.sync()  # durable before a job names it
        ok, failed = len(succeeded), len(recorder.failed_index)
        with self.jobs.db.write() as tx:
            job_rows.set_outcome(tx, self.pipeline, self.wave, datum_list=list_id, processed=ok,
                                 skipped=len(dset) - len(to_run) - len(resumed), failed=failed)
        return len(to_run) - len(recorder.ok_index) - failed

    def _report(self, done: int, total: int) -> None:
        if self.progress:
            self.progress({"pipeline": self.pipeline, "id": self.wave}, done, total)

    def _previous_output(self):
        """The output branch's head commit, and the job that made it if that job succeeded."""
        jobs = self.jobs
        branch = repo_rows.branch(jobs.db, self.pipeline, self.spec.output_branch)
        if branch is None or branch.head is None:
            return None, None
        commit = jobs.repos.get_commit(self.pipeline, branch.head)
        job = job_rows.get(jobs.db, self.pipeline, commit.job) if commit.job else None
        return commit, job if job is not None and job.state == "success" else None

    def _prev_datums(self, prev_job: job_rows.Job | None):
        if prev_job is None or not prev_job.datum_list:
            return pa.array([], pa.binary(16)), {}
        table = index.read_table(self.jobs.chunks, bytes.fromhex(prev_job.datum_list))
        return table["datum"].combine_chunks(), None if table.num_rows > 200_000 else table

    def _cached(self, hex_ids: list[str]) -> dict[str, datum_rows.DatumOutput]:
        """Where the outputs of these datums are, for those already processed by some job."""
        return datum_rows.outputs_of(self.jobs.db, self.pipeline, hex_ids)

    def _ran_here(self, output: datum_rows.DatumOutput | None) -> bool:
        """Whether this job itself ran the datum (before it was resumed)."""
        return output is not None and output.job == self.wave

    # --------------------------------------------------------------- execute

    def _execute(self, ctx, executor, dset, to_run, reasons, recorder, done: int) -> list[tuple]:
        """Run every datum of `to_run`, each with its retries; one failing does not stop the others.

        Returns the failed ones as (datum id, key, result, tries).  Only a
        job_timeout stops the job early (the rest do not run), `stop` (the
        executor kills the running steps, which are not recorded), and
        Ctrl-C: then the running steps are killed at once and the interrupt
        goes on up, leaving the job resumable."""
        ran_failed: list[tuple] = []
        if not to_run:
            return ran_failed
        tries_allowed = self.spec.datum_tries
        lock = threading.Lock()
        # Every secret the store holds, not only this spec's: a step may print one it found elsewhere.
        secrets = self.store_secrets()
        counter = [done]

        def one(i: int):
            task = dset.task(i, self.wave, self.pipeline)
            result, attempt = None, 0
            while attempt < tries_allowed and not ctx.cancelled.is_set():
                attempt += 1
                try:
                    result = executor.run_datum(ctx, task)
                except DplError as e:
                    result = DatumResult(task.datum, None, error=e.message, started=time.time(), finished=time.time())
                except Exception:
                    if ctx.cancelled.is_set():
                        return  # the executor was stopped under it
                    raise
                if result.ok or ctx.time_left() == 0:
                    break
            if result is None or (ctx.cancelled.is_set() and not result.ok):
                return  # stopped before it finished: it did not run, and runs when the job resumes
            recorder.add(i, dset, task, result, attempt, reasons.get(i, "new input"), secrets)
            with lock:
                counter[0] += 1
                self._report(counter[0], len(dset))
                if not result.ok:
                    ran_failed.append((task.datum, dset.key(i), result, attempt))

        slots = max(1, executor.slots(ctx))
        pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="datum")
        running: set = set()
        try:
            for i in to_run:
                if ctx.time_left() == 0 or ctx.cancelled.is_set():
                    break
                running.add(pool.submit(one, i))
                if len(running) >= slots:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for f in finished:
                        f.result()
            for f in running:
                f.result()
        except BaseException:
            ctx.cancelled.set()
            executor.stop(ctx)  # kills the running steps now, rather than waiting for them to end
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return ran_failed

    def store_secrets(self) -> list[str]:
        """Every value of every secret the store holds, longest first: what no log or job error may show."""
        return self.jobs.secrets.secret_values()

    # ------------------------------------------------------------------ land

    def _land(self, dset, new: list[int], removed: pa.Array, prev_commit) -> None:
        """Output = previous output - outputs of removed datums + outputs of new ones."""
        jobs = self.jobs
        base = jobs.files.commit_table(prev_commit) if prev_commit is not None else index.EMPTY
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
        layers = [index.write_layer(jobs.chunks, delta)] if delta.num_rows else []

        def finish(tx, cid):
            if not job_rows.succeed(tx, self.pipeline, self.wave, self.owner, time.time(), cid):
                # taken over meanwhile: the new owner lands it, not us (this rolls back)
                raise Conflict(f"Job {self.wave[:12]} of pipeline {self.pipeline!r} was taken over by another runner.")

        commit_id = uuid.uuid4().hex if commit_rows.exists(jobs.db, self.pipeline, self.wave) else self.wave
        try:
            jobs.commits.land(
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
        except Exception:
            row = job_rows.get(jobs.db, self.pipeline, self.wave)
            if row is None or row.owner != self.owner:
                # Stopped (or taken over) while landing; `dpl stop-job` may even have taken the
                # commit id for the killed job's output.  Whoever did it wrote the job's state.
                raise Stopped(f"job {self.wave[:12]} is no longer this runner's") from None
            raise

    def _outputs_of(self, hex_ids: list[str]) -> pa.Table:
        """The output rows of these datums, from the batches they were recorded in."""
        rows = self._cached(hex_ids)
        by_batch: dict[str, list[tuple[int, int]]] = {}
        for r in rows.values():
            if r.count:
                by_batch.setdefault(r.batch, []).append((r.start, r.count))
        tables = []
        for batch, spans in by_batch.items():
            table = index.read_table(self.jobs.chunks, bytes.fromhex(batch))
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


