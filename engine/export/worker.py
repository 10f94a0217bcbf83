"""What an exported step runs: `dpl worker PIPELINE`, one pipeline's pending jobs on a fresh machine.

A pod starts with nothing but the image, so the worker opens the store by
its URLs: it makes a store directory naming the shared S3 chunks and
PostgreSQL metadata (as `dpl init --object-store ... --metadata ...` does on
a second machine) and runs the jobs there, with the same job runner as
`dpl run`: datums already processed are skipped, provenance is recorded in
the shared metadata, and two workers never hold one job.

It runs only the jobs of its pipeline that may run now: the oldest first,
once the upstream jobs of the same wave and older ones are done (the
workflow's edges run those steps first), so it reads what `dpl run`, taking
every job oldest first, would have had it read.  A job still waiting for its upstream is left for a
later run, not waited for: in a workflow, the step that would finish it has
already run, or is not part of the export.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import ExportError
from ..storedir import CONFIG, init_store
from ..store import Store
from ...storage import registry
from ...storage.errors import StoreExists


def open_store(object_store: str | None, metadata: str | None, path: str | os.PathLike | None = None) -> Store:
    """The store a worker acts on: found as usual, or, given the shared URLs, a store
    directory naming them (DPL_STORE, else one per URL pair in the temp directory),
    made on first use."""
    if object_store is None and metadata is None:
        return Store.open(path)
    if not object_store or not metadata:
        raise ExportError("A worker needs both the object store and the metadata URL.", hint="Pass --object-store s3://... and --metadata postgresql://...")
    digest = hashlib.sha256(f"{object_store}\n{metadata}".encode()).hexdigest()[:16]
    root = Path(path or os.environ.get("DPL_STORE") or Path(tempfile.gettempdir()) / f"dpl-worker-{digest}")
    if not (root / CONFIG).exists():
        try:
            init_store(root, object_store=object_store, metadata=metadata)
        except StoreExists:
            pass  # another worker on this machine made it first
    config = json.loads((root / CONFIG).read_text())
    if (config.get("object_store"), config.get("metadata")) != (registry.normalize(object_store), metadata):
        raise ExportError(f"The store at {root} names other URLs than this worker was given.",
                          hint="Unset DPL_STORE, or point it at an empty directory.")
    return Store.open(root)


def load_secrets(store: Store, directory: str | os.PathLike) -> list[str]:
    """Take the Kubernetes secrets mounted under `directory` (one directory per secret,
    one file per key) into the store's secrets, so the steps get them as they get any
    dpl secret; the names of those taken.  A secret not mounted stays as the store has it."""
    taken = []
    base = Path(directory)
    for secret in sorted(base.iterdir()) if base.is_dir() else []:
        if secret.name.startswith(".") or not secret.is_dir():
            continue
        # Kubernetes mounts keys as symlinks beside its own `..data` entries.
        data = {f.name: f.read_text() for f in sorted(secret.iterdir()) if not f.name.startswith(".") and f.is_file()}
        if data:
            store.create_secret(secret.name, data, overwrite=True)
            taken.append(secret.name)
    return taken


def run_pipeline_jobs(store: Store, pipeline: str, *, executor: str | None = None, progress=None) -> list[dict]:
    """Run the jobs of `pipeline` that may run now, oldest first; each job's final state."""
    store.inspect_pipeline(pipeline)  # PipelineNotFound names a wrong one
    return store.run_jobs(pipeline=pipeline, executor=executor, progress=progress, wait=False)


def waiting(store: Store, pipeline: str) -> list[dict]:
    """The jobs of `pipeline` left unfinished: waiting for upstream jobs, or held by another runner."""
    return [j for j in store.list_jobs(pipeline) if j["state"] in ("created", "running")]
