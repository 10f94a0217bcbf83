"""A finished job's datums, rebuilt as they ran: what `debug-datum` and `verify` re-run.

A job records its pinned input commits and the salt its datum ids were made
with, so cutting those commits again with the same spec version gives the
very same datums (ids, files, refs, environment) without any new metadata.
The context is the job runner's (`JobRun.run`): the spec's secrets, the
code directory of its pipeline version, a scratch directory of its own,
and no timeouts (a person at a shell, or a verification, is not the job).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import datums as datums_mod
from .executors.base import JobContext
from .errors import DatumNotFound, JobFailed
from ..storage import index
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows

if TYPE_CHECKING:
    from .store import Store


@dataclass
class Replay:
    job: job_rows.Job
    spec: object  # engine.spec.Spec of the job's pipeline version
    dset: datums_mod.DatumSet
    code_dir: str | None

    def find(self, prefix: str) -> int:
        """The index of the datum whose id starts with `prefix`."""
        hits = [i for i, d in enumerate(self.dset.ids) if d.hex().startswith(prefix.lower())]
        if len(hits) != 1:
            what = "no datum" if not hits else f"{len(hits)} datums"
            raise DatumNotFound(f"Job {self.job.id[:12]} of pipeline {self.job.pipeline!r} has {what} {prefix!r}.",
                                hint=f"See `dpl list-datum {self.job.pipeline}@{self.job.id[:12]}`.")
        return hits[0]

    def task(self, i: int) -> datums_mod.DatumTask:
        return self.dset.task(i, self.job.id, self.job.pipeline)

    def context(self, store: "Store", purpose: str) -> JobContext:
        """A JobContext like the job's own, in a scratch directory only this replay uses (`done` removes it)."""
        scratch = store.root / "tmp" / purpose / f"{self.job.pipeline}-{self.job.id[:12]}-{uuid.uuid4().hex[:8]}"
        scratch.mkdir(parents=True)
        ctx = JobContext(job=f"{purpose}-{uuid.uuid4().hex[:12]}", pipeline=self.job.pipeline, spec=self.spec,
                         store_root=store.root, chunks=store.chunks, config=store.config, scratch=scratch, code_dir=self.code_dir)
        ctx.secrets, ctx.secret_files = store.secrets.resolve_secrets(self.spec)
        return ctx


def replay(store: "Store", pipeline: str | None, job: str) -> Replay:
    """The datums of job `job` (an id or unique prefix), rebuilt from its pinned inputs and salt."""
    row = store.jobs.job(pipeline, job)
    if not row.inputs or row.salt is None:
        raise JobFailed(f"Job {row.id[:12]} of pipeline {row.pipeline!r} never planned its datums ({row.state}).",
                        hint="Only a job that started has datums to re-run.")
    spec = store.jobs.spec(row.pipeline, row.version)
    version = pipeline_rows.version(store.db, row.pipeline, row.version)
    pinned = []
    for p, pin in zip(spec.pfs_inputs(), row.inputs):
        table = store.files.commit_table(store.get_commit(p.repo, pin["commit"])) if pin["commit"] else index.EMPTY
        pinned.append(datums_mod.pin(p, pin["commit"], table))
    return Replay(row, spec, datums_mod.build(spec, pinned, row.salt), version.code.get("dir") if version else None)


def done(ctx: JobContext) -> None:
    shutil.rmtree(ctx.scratch, ignore_errors=True)


def executor_kind(store: "Store", r: Replay, executor: str | None) -> str:
    """Where the job ran, unless told otherwise."""
    return executor or (r.job.executor or {}).get("kind") or r.spec.executor or store.config.get("executor", "local")


def is_tty() -> bool:
    return os.isatty(0) and os.isatty(1)

