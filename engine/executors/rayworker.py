"""The Ray executor's worker side: what runs in a Ray worker process for each datum.

A task (`run_on_worker`) gets the job's payload and one `DatumTask` (file
references, never file bytes).  The worker opens the store's chunk store
itself, runs the datum in the local executor's sandbox and returns its
`DatumResult`, outputs already stored as chunks.  It keeps the chunk store
and the sandbox of the job it last ran, so that the datums of a job after
the first pay for neither.  It never writes metadata: that is the
coordinator's (ray.py).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import ray

from .base import DatumResult, DatumTask, JobContext
from .runner import failed
from ...storage import pids
from ...storage.errors import DplError, StorageUnavailable


@ray.remote
def run_on_worker(payload: dict, task: DatumTask) -> DatumResult:
    try:
        state = _worker_job(payload)
        result = state.executor.run_datum(state.ctx, task)
    except DplError as e:  # a damaged chunk, an unreachable store: the datum's error, with where and what to do
        where = "" if socket.gethostname() in e.message else f" (on Ray node {socket.gethostname()})"
        return failed(task, e.message.rstrip(".") + where + "." + (f" {e.hint}" if e.hint else ""))
    except KeyboardInterrupt:  # Ray's gentle cancel, should it get through: kill the step and its sandbox
        _close_worker_job()
        raise
    if result.ok and state.flush:
        state.ctx.chunks.sync()  # the S3 store uploads in the background: the rows must not outrun their chunks
    return result


class _WorkerJob:
    def __init__(self, payload: dict):
        from .local import LocalExecutor
        from ..spec import Spec

        self.job = payload["job"]
        self.scratch = _worker_dir() / f"{self.job[:12]}-{os.getpid()}"
        self.ctx = JobContext(
            job=payload["job"], pipeline=payload["pipeline"], spec=Spec(payload["spec"]),
            store_root=Path(payload["store_root"]), chunks=_chunk_store(payload["store_root"], json.dumps(payload["config"], sort_keys=True)),
            config=payload["config"], scratch=self.scratch, secrets=payload["secrets"], secret_files=payload["secret_files"],
            code_dir=payload["code_dir"], deadline=payload["deadline"],
        )  # fmt: skip
        # A local-directory store is on this machine's disk (or a shared one), and
        # the coordinator's flush covers it; an S3 store must upload before we answer.
        self.flush = payload["config"].get("object_store", "local") != "local"
        self.executor = LocalExecutor()
        self.executor.start(self.ctx)

    def close(self) -> None:
        self.executor.stop(self.ctx)
        shutil.rmtree(self.scratch, ignore_errors=True)


_worker: dict = {}


def _worker_job(payload: dict) -> _WorkerJob:
    current = _worker.get("job")
    if current is not None and current.job == payload["job"]:
        return current
    _close_worker_job()
    if not _worker.get("started"):
        _worker["started"] = True
        _sweep()
        atexit.register(_close_worker_job)
    _worker["job"] = _WorkerJob(payload)
    return _worker["job"]


def _close_worker_job() -> None:
    state = _worker.pop("job", None)
    if state is not None:
        state.close()


def _worker_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"dpl-ray-{os.getuid()}"
    path.mkdir(exist_ok=True)
    return path


def _sweep() -> None:
    """Remove the scratch of worker processes that died (killed mid-datum)."""
    for entry in _worker_dir().iterdir():
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pids.alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


@functools.lru_cache(maxsize=4)
def _chunk_store(store_root: str, config_json: str):
    from ..storedir import open_chunk_store

    config = json.loads(config_json)
    if config.get("object_store", "local") == "local":
        root = Path(store_root)
        if not (root / "chunks").is_dir():
            raise StorageUnavailable(
                f"The store's chunks at {root / 'chunks'} are not on this Ray node ({socket.gethostname()}).",
                hint="A local-directory store works only when every node sees its directory; use an S3 store "
                "(`dpl init --object-store s3://BUCKET/PREFIX`) for a cluster of machines.",
            )
    else:
        # An S3 store reads through a cache; the coordinator's store directory
        # need not exist here, so the cache lives in this node's temp dir.
        root = _worker_dir() / "stores" / hashlib.sha256(config["object_store"].encode()).hexdigest()[:16]
        root.mkdir(parents=True, exist_ok=True)
    return open_chunk_store(root, config)
