"""The executor Protocol: run one datum of a job, somewhere.

The job runner owns scheduling, retries, timeouts of the whole job and every
metadata write; an executor only turns a `DatumTask` (which files to show
at `/pfs/<input>`, which command to run) into a `DatumResult` (exit code,
logs, the files the step left in `/pfs/out`, already stored as chunks).
`run_datum` is called from `slots()` runner threads at once, so it must be
thread-safe.  Keeping the contract this small is what lets the same spec
run unchanged on the local sandbox, Docker and Ray.

What running a step means (env, timeouts, exit codes, logs, outputs) is
written once, in `runner.run_step`; an executor brings a `runner.Box`, the
sandbox, container or subprocess it starts and stops.  `DatumTask` is built
where datums are built (`engine.datums`) and re-exported here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import pyarrow as pa

from ..datums import DatumInput, DatumTask  # noqa: F401  (built where datums are built; re-exported)
from ..spec import Spec


@dataclass
class DatumResult:
    datum: str
    exit_code: int | None  # None when the step never ran or was killed
    stdout: bytes = b""
    stderr: bytes = b""
    error: str | None = None  # why it failed, in words: "timed out after 30s", "killed: out of memory"
    outputs: pa.Table | None = None  # path, size, hash, refs of /pfs/out
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0


@dataclass
class JobContext:
    """What every datum of one job shares."""

    job: str
    pipeline: str
    spec: Spec
    store_root: Path
    chunks: object  # the store's ChunkStore
    config: dict  # the store's config.json (object store URL etc., for remote workers)
    scratch: Path  # a directory only this job uses
    secrets: dict[str, str] = field(default_factory=dict)  # env var -> value; never logged
    secret_files: dict[str, bytes] = field(default_factory=dict)  # mount path -> bytes
    code_dir: str | None = None  # where the spec file was: the step's default working directory
    deadline: float | None = None  # job_timeout, as a time.time()
    cancelled: threading.Event = field(default_factory=threading.Event)
    reader: object = None  # the job's ChunkReader, made by the step runner on first use
    # What becomes of /pfs/out after a datum succeeds: None stores it (`runner.collect_outputs`);
    # `dpl verify` (engine/verify.py) passes a function that only hashes it.
    collect: Callable | None = None

    def time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.time())


class Executor(Protocol):
    kind: str

    def start(self, ctx: JobContext) -> dict:
        """Prepare for a job; return what provenance should record about
        where it ran (kind, sandbox, image digest).  An `image_digest` key
        becomes part of the datum ids."""

    def slots(self, ctx: JobContext) -> int:
        """How many datums may run at once."""

    def run_datum(self, ctx: JobContext, task: DatumTask) -> DatumResult: ...

    def cancel(self, ctx: JobContext) -> None:
        """Kill the job's running steps now; called from another thread once `ctx.cancelled`
        is set (`dpl stop-job`), while `run_datum` calls may be under way.  `stop` follows."""

    def stop(self, ctx: JobContext) -> None:
        """Release what `start` took (containers, worker pools)."""
