"""Jobs: running the waves of work commits start, and reading jobs and datums: the `Jobs` component.

A wave (`waves.Waves`) is one job, sharing a commit's global id, for every
pipeline downstream of what changed.  A job may run when no older job of its
pipeline and no job of an upstream pipeline in its wave is still unfinished,
which runs each wave in DAG order and each pipeline's waves in commit order.
A job whose upstream job did not succeed is not run but marked unrunnable,
and a job that fails keeps a failed output commit (`failures`).  Running one
job is `jobrun.JobRun`; Ctrl-C hands the job back, to be resumed.

Two runners never hold one job: a job is claimed by compare-and-swap on its
owner, kept by a heartbeat, and taken over when its owner has died
(`lease`).  A job stopped while it runs (`dpl stop-job`, from any process)
is noticed through its row, and its running steps are killed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import failures
from . import spec as specs
from .commits import Commits
from .jobrun import JobRun, Progress, Stopped
from .lease import Lease, lease_held
from .repos import Repos
from .waves import Waves
from .writers import writes_objects
from ..storage import index
from ..storage.chunkstore import ChunkStore
from ..storage.errors import DplError
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata.db import Database
from ..storage.pids import owner_id
from .errors import DatumNotFound, JobNotFound, PipelineNotFound

if TYPE_CHECKING:
    from .files import Files
    from .secrets import Secrets


class Jobs:
    """The job runner, and reading jobs and datums."""

    def __init__(self, db: Database, chunks: ChunkStore, root: Path, config: dict, repos: Repos, commits: Commits,
                 files: "Files", secrets: "Secrets", waves: Waves):
        self.db, self.chunks, self.config = db, chunks, config
        self.root = root  # where the writers registry and a job's scratch directory live
        self.repos, self.commits, self.files, self.secrets, self.waves = repos, commits, files, secrets, waves

    def spec(self, pipeline: str, version: int) -> specs.Spec:
        """The spec of one version of a pipeline: the one its jobs of that version run."""
        return specs.Spec(pipeline_rows.version(self.db, pipeline, version).spec)  # validated when it was created

    # ---------------------------------------------------------------- runner

    def run_jobs(self, wave: str | None = None, *, pipeline: str | None = None, executor: str | None = None,
                 progress: Progress | None = None, wait: bool = True) -> list[dict]:
        """Run every runnable job until the wave `wave` (or all work) is done.

        Returns the jobs this call finished, in order: those it ran, and
        those it found unrunnable.  With `wait`, jobs held by another live
        runner are waited for; a runner that died is taken over.  With
        `pipeline` (an exported workflow's step), only that pipeline's jobs
        run, and only once every older or same-wave job upstream of it is
        done: the order one runner taking every job oldest first would keep.
        """
        ran: list[dict] = []
        owner = owner_id()
        while True:
            if wave is not None and not self._unfinished(wave):
                break
            unrunnable: list[tuple[str, str]] = []
            job = self._claim(owner, unrunnable, pipeline)
            ran += [self.inspect_job(p, j) for p, j in unrunnable]
            if job is not None:
                ran.append(self._run_claimed(job, owner, executor, progress))
                continue
            if unrunnable:
                continue  # the next job of a pipeline found unrunnable may run now
            if not wait or not self._unfinished(wave):
                break
            time.sleep(0.2)
        return ran

    def _unfinished(self, wave: str | None) -> bool:
        return job_rows.any_unfinished(self.db, wave)

    def _claim(self, owner: str, unrunnable: list[tuple[str, str]], pipeline: str | None = None) -> job_rows.Job | None:
        """Claim the next job that may run (of `pipeline` only, if given); (pipeline, id) of those
        found unrunnable meanwhile go to `unrunnable`."""
        with self.db.write() as tx:
            rows = job_rows.unfinished(tx)  # oldest first
            if not rows:
                return None
            graph = self.waves.graph(tx)
            now = time.time()
            seen_pipelines: set[str] = set()
            for at, r in enumerate(rows):
                first_of_pipeline = r.pipeline not in seen_pipelines
                seen_pipelines.add(r.pipeline)
                if not first_of_pipeline or (pipeline is not None and r.pipeline != pipeline):
                    continue  # an older job of this pipeline comes first, or another pipeline's step runs it
                if r.state == "running" and lease_held(r, now):
                    continue
                ups = graph.upstream(r.pipeline) if r.pipeline in graph.pipelines else set()
                if any(o.pipeline in ups and (o.id == r.id or (pipeline is not None and k < at)) for k, o in enumerate(rows)):
                    continue  # an upstream job of the same wave (or, for one pipeline's step, an older one) is not done yet
                why = self._unrunnable(tx, graph, r)
                if why:
                    output = None
                    if r.pipeline in graph.pipelines:
                        output = failures.record_failed_output(tx, r.pipeline, r.id, graph.pipelines[r.pipeline].output_branch, why, now)
                    job_rows.mark_unrunnable(tx, r.pipeline, r.id, now, why, output)
                    unrunnable.append((r.pipeline, r.id))
                    continue
                job_rows.claim(tx, r.pipeline, r.id, owner, now)
                return job_rows.get(tx, r.pipeline, r.id)
        return None

    @staticmethod
    def _unrunnable(tx, graph, job: job_rows.Job) -> str | None:
        """Why `job` cannot run, if it cannot (Pachyderm's JOB_UNRUNNABLE): an
        upstream job did not succeed, so what the pipeline would read is not
        the output its inputs call for.  An upstream pipeline with a job in
        this wave is judged by that job; any other by its newest finished job,
        which is what its output branch stands for."""
        if job.pipeline not in graph.pipelines:
            return f"Job {job.id[:12]} of pipeline {job.pipeline!r} cannot run: the pipeline was deleted."
        in_wave = job_rows.states_in_wave(tx, job.id)
        ups = graph.upstream(job.pipeline)
        for p in sorted(ups):
            if in_wave.get(p) in ("failure", "unrunnable", "killed"):
                return f"Job {job.id[:12]} of pipeline {job.pipeline!r} is unrunnable: upstream job {p}@{job.id[:12]} did not succeed ({in_wave[p]})."
        for repo, branch in sorted(graph.inputs.get(job.pipeline, ())):
            if repo not in graph.pipelines or graph.output(repo) != (repo, branch) or repo in in_wave:
                continue
            last = job_rows.last_finished(tx, repo)
            if last is not None and last.state != "success":
                return (f"Job {job.id[:12]} of pipeline {job.pipeline!r} is unrunnable: the last job of upstream pipeline {repo!r}, "
                        f"{repo}@{last.id[:12]}, did not succeed ({last.state}).")
        return None

    @writes_objects
    def _run_claimed(self, job: job_rows.Job, owner: str, executor: str | None, progress: Progress | None) -> dict:
        run = JobRun(self, job, owner, executor, progress)
        with Lease(self.db, job, owner, on_lost=run.stop):
            try:
                run.run()
            except Stopped:
                pass  # stopped or taken over: whoever did it wrote the job's state
            except DplError as e:
                self._fail(job, owner, e.message)
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM: the steps are stopped and what finished is recorded;
                # the job waits for the next `dpl run`, which redoes none of it.
                with self.db.write() as tx:
                    job_rows.release(tx, job.pipeline, job.id, owner)
                raise
            except Exception as e:
                self._fail(job, owner, f"internal error: {type(e).__name__}: {e}")
                raise
        return self.inspect_job(job.pipeline, job.id)

    def _fail(self, job: job_rows.Job, owner: str, message: str) -> None:
        """The job failed: say so, and keep its failed output commit (if `owner` still held it)."""
        now = time.time()
        with self.db.write() as tx:
            if job_rows.fail(tx, job.pipeline, job.id, owner, now, message):
                failures.keep_failed_output(tx, job.pipeline, job.id, message, now)

    # ------------------------------------------------------------------ read

    def job(self, pipeline: str | None, job: str) -> job_rows.Job:
        """The job `job` (an id or a unique prefix of one), of `pipeline` if given."""
        rows = job_rows.by_prefix(self.db, job, pipeline)
        if not rows:
            raise JobNotFound(f"No job {job!r}" + (f" of pipeline {pipeline!r}." if pipeline else "."), hint="See `dpl list-job`.")
        if len(rows) > 1:
            names = ", ".join(sorted(f"{r.pipeline}@{r.id[:12]}" for r in rows)[:5])
            raise JobNotFound(f"{job!r} names several jobs ({names}).", hint="Write PIPELINE@JOB.")
        return rows[0]

    def inspect_job(self, pipeline: str | None, job: str) -> dict:
        return _job_dict(self.job(pipeline, job))

    def list_jobs(self, pipeline: str | None = None, wave: str | None = None, limit: int | None = None) -> list[dict]:
        if pipeline and not pipeline_rows.exists(self.db, pipeline):
            raise PipelineNotFound(f"Pipeline {pipeline!r} does not exist.", hint="See `dpl list-pipeline`.")
        return [_job_dict(r) for r in job_rows.listing(self.db, pipeline, wave, limit)]

    def list_datums(self, pipeline: str | None, job: str, *, limit: int | None = None, after: str | None = None,
                    failed_first: bool = False) -> list[dict]:
        """The datums of a job and what happened to each: success or failed (it ran), skipped, or not-run.

        Without `limit`, all of them, in the job's datum-list order.  With
        `limit`, one page, after the datum id `after` (the previous page's
        last row): with `failed_first` the failed datums, then those that
        never ran, then the successful, then the skipped; otherwise those the
        job ran, then the rest.  Within a group, ran datums come by id and the
        others in list order.  A page reads only its own rows from the
        metadata (and the datum list only once the ran ones are exhausted), so
        a page of a 100,000-datum job costs what one of a 100-datum job does.
        """
        row = self.job(pipeline, job)
        if limit is None:
            out = self._all_datums(row)
            return sorted(out, key=lambda d: _RANK.get(d["state"], 1)) if failed_first else out
        return _DatumPage(self, row, failed_first).read(limit, after)

    def _all_datums(self, row: job_rows.Job) -> list[dict]:
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
        row = self.job(pipeline, job)
        rows = datum_rows.by_prefix(self.db, row.pipeline, datum)
        mine = [r for r in rows if r.job == row.id] or rows
        if not mine:
            raise DatumNotFound(f"Datum {datum!r} was not processed by pipeline {row.pipeline!r}.", hint=f"See `dpl list-datum {row.pipeline}@{row.id[:12]}`.")
        info = _datum_dict(mine[0], full=True)
        if mine[0].job != row.id:
            info["carried_from_job"] = mine[0].job
        return info

    def datum_logs(self, pipeline: str | None, job: str, datum: str | None = None) -> list[dict]:
        row = self.job(pipeline, job)
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


_RANK = {failures.FAILED: 0, failures.NOT_RUN: 1, failures.SUCCESS: 2, failures.SKIPPED: 3}


class _DatumPage:
    """One page of a job's datums, read group by group (see `Jobs.list_datums`).

    A group is ("ran", state): rows of the `datums` table, by id (state None:
    all of them), or ("list", state): rows of the job's Arrow datum list that
    the job did not run, by position.  The job's counts say which groups are
    empty, so a finished job with no failure never scans for failed rows."""

    def __init__(self, jobs: Jobs, row: job_rows.Job, failed_first: bool):
        self.jobs, self.row = jobs, row
        f = failures
        self.groups = ([("ran", f.FAILED), ("list", f.NOT_RUN), ("ran", f.SUCCESS), ("list", f.SKIPPED)] if failed_first
                       else [("ran", None), ("list", f.NOT_RUN), ("list", f.SKIPPED)])
        self._table = None

    def table(self):
        if self._table is None:
            self._table = index.read_table(self.jobs.chunks, bytes.fromhex(self.row.datum_list))
        return self._table

    def _empty(self, source: str, state: str | None) -> bool:
        r = self.row
        if not r.datum_list:  # still running: nothing is listed yet, and any state may appear
            return source == "list"
        counts = {failures.FAILED: r.failed, failures.SKIPPED: r.skipped,
                  failures.NOT_RUN: (r.total or 0) - r.processed - r.skipped - r.failed}
        return state in counts and counts[state] <= 0

    def _start(self, after: str | None) -> tuple[int, object]:
        """The group the datum `after` is in, and its place there (an id, or a list position)."""
        if after is None:
            return 0, None
        state = datum_rows.state_of(self.jobs.db, self.row.pipeline, self.row.id, after)
        if state is not None:
            return next(i for i, g in enumerate(self.groups) if g[0] == "ran" and g[1] in (None, state)), after
        if self.row.datum_list:
            import pyarrow as pa
            import pyarrow.compute as pc

            try:
                pos = pc.index(self.table()["datum"], pa.scalar(bytes.fromhex(after), pa.binary(16))).as_py()
            except ValueError:
                pos = -1
            if pos >= 0:
                state = self.table()["state"][pos].as_py()
                return next(i for i, g in enumerate(self.groups) if g == ("list", state)), pos
        raise DatumNotFound(f"Job {self.row.id[:12]} of {self.row.pipeline!r} has no datum {after!r} to list after.",
                            hint="Start the listing again without a cursor.")

    def read(self, limit: int, after: str | None) -> list[dict]:
        first, place = self._start(after)
        out: list[dict] = []
        for i in range(first, len(self.groups)):
            if len(out) >= limit:
                break
            source, state = self.groups[i]
            if self._empty(source, state):
                continue
            since = place if i == first else None
            if source == "ran":
                rows = datum_rows.page_of_job(self.jobs.db, self.row.pipeline, self.row.id, state=state, after=since,
                                              limit=limit - len(out))
                out += [_datum_dict(r) for r in rows]
            else:
                out += self._listed(state, since, limit - len(out))
        return out

    def _listed(self, state: str, after_pos: int | None, n: int) -> list[dict]:
        import numpy as np
        import pyarrow.compute as pc

        table = self.table()
        positions = np.flatnonzero(pc.equal(table["state"], state).to_numpy(zero_copy_only=False))
        if after_pos is not None:
            positions = positions[positions > after_pos]
        rows = table.take(positions[:n])
        return [{"datum": d.hex(), "key": k, "state": s, "job": self.row.id}
                for d, k, s in zip(rows["datum"].to_pylist(), rows["key"].to_pylist(), rows["state"].to_pylist())]
