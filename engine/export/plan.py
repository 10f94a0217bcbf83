"""The plan of an export, shared by Argo and Kubeflow: one step per pipeline, edges from the specs' inputs.

A step is the pipeline's `dpl worker` command (engine/export/worker.py) and
what its pod needs to reach the store: the store's S3 and PostgreSQL URLs,
the endpoint and region boto3 uses here, and the names of the Kubernetes
secrets that hold the credentials (the store's, and those the spec's
`transform.secrets` name).  A plan holds names of secrets, never values:
a PostgreSQL password written in the store's URL is taken out of it, and
the pod gets it as PGPASSWORD (libpq's own variable) from the store secret.

An edge A -> B means B reads A's output branch; a pipeline reading a repo
that no exported pipeline writes has no edge for it and reads the branch as
it stands.  Steps are listed in DAG order, ties by name, so an export is the
same file every time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ExportError
from ..code import code_files
from ..spec import Spec
from ...storage import registry
from ...storage.metadata import is_url
from ...storage.metadata import pipelines as pipeline_rows

# Where a step's pod mounts each Kubernetes secret a spec names (one file per key, as
# Kubernetes mounts a secret); `dpl worker --secrets-dir` reads them from there.
SECRETS_DIR = "/var/run/dpl/secrets"
# The keys of the store secret each step reads its credentials from (each optional:
# a cluster may give S3 access through its service account, PostgreSQL may trust the pod).
STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD")
# What boto3 reads from the environment here that is configuration, not a credential.
S3_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Step:
    pipeline: str
    name: str  # the pipeline's name as Kubernetes allows it (DNS-1123 label)
    depends: tuple[str, ...]  # names of the steps that write what it reads
    command: tuple[str, ...]
    secrets: tuple[str, ...]  # Kubernetes secrets its spec names, each mounted at SECRETS_DIR/NAME
    requests: dict = field(default_factory=dict)  # cpu, memory, gpu, gpu_type: from the spec's resource_requests
    limits: dict = field(default_factory=dict)  # ... and resource_limits


@dataclass(frozen=True)
class Plan:
    name: str
    image: str
    steps: tuple[Step, ...]  # DAG order
    env: dict  # plain settings every step gets (S3 endpoint and region)
    store_secret: str  # the Kubernetes secret whose STORE_SECRET_KEYS every step gets as env
    object_store: str
    metadata: str  # without its password
    notes: tuple[str, ...] = ()  # what the image must hold for a step to run as it does here

    def step(self, pipeline: str) -> Step:
        return next(s for s in self.steps if s.pipeline == pipeline)


def build(store, pipelines: list[str] | None = None, *, image: str, object_store: str | None = None, metadata: str | None = None,
          executor: str = "local", store_secret: str = "dpl-store", name: str = "dpl", env: dict | None = None) -> Plan:
    """The plan of exporting `pipelines` (all when empty) of the embedded `store`.

    The URLs default to the store's own; both must be reachable from a
    cluster (s3:// and postgresql://).  `env` defaults to the S3 settings
    of this process's environment, the ones boto3 uses here."""
    object_store = object_store or store.config.get("object_store", "local")
    metadata = metadata or store.config.get("metadata")
    _check_reachable(object_store, metadata)
    names = list(dict.fromkeys(pipelines or [p["name"] for p in store.list_pipelines()]))
    if not names:
        raise ExportError("The store has no pipelines to export.", hint="Create one with `dpl create-pipeline spec.json`.")
    specs = {n: store.pipeline_spec(n) for n in names}  # PipelineNotFound names an unknown one
    name = _k8s_name(name)
    step_names = _k8s_names(names, taken={name})  # the workflow's DAG template is named after it
    outputs = {(n, specs[n].output_branch): n for n in names}
    ups = {n: sorted({outputs[r] for r in specs[n].input_repos() if r in outputs and outputs[r] != n}) for n in names}
    metadata_url = without_password(metadata)
    steps, notes = [], []
    for n in _dag_order(ups):
        spec = specs[n]
        notes += _host_code(store, n, spec, executor)
        secrets = tuple(sorted({s["name"] for s in spec.transform.get("secrets", [])}))
        command = ["dpl", "worker", n, "--object-store", object_store, "--metadata", metadata_url, "--executor", executor]
        if secrets:
            command += ["--secrets-dir", SECRETS_DIR]
        steps.append(Step(n, step_names[n], tuple(step_names[u] for u in ups[n]), tuple(command), secrets,
                          _resources(spec, "resource_requests"), _resources(spec, "resource_limits")))
    if env is None:
        env = {k: os.environ[k] for k in S3_SETTINGS if os.environ.get(k)}
    return Plan(name, image, tuple(steps), dict(env), store_secret, object_store, metadata_url, tuple(notes))


def _host_code(store, pipeline: str, spec: Spec, executor: str) -> list[str]:
    """A note when the step runs files from this machine (a script beside its spec): a pod has
    them only if the image holds them at the same path, and their hash is part of each datum id."""
    row = pipeline_rows.version(store.db, pipeline, store.inspect_pipeline(pipeline)["version"])
    root, files = code_files(spec, (row.code or {}).get("dir") if row else None, executor)
    if not files:
        return []
    note = (f"Pipeline {pipeline!r} runs {', '.join(files)} from {root}: the image must hold them at that path, "
            "else its step cannot run them (and a changed file reruns its datums).")
    return [note]


def _check_reachable(object_store: str, metadata: str | None) -> None:
    if registry.scheme(object_store) != "s3":
        raise ExportError(f"The store keeps its chunks at {object_store!r}, which a step on a cluster cannot reach.",
                          hint="Export a store made with `dpl init --object-store s3://BUCKET/PREFIX --metadata postgresql://...`, "
                               "or name them with --object-store and --metadata.")
    if not metadata or not is_url(metadata):
        raise ExportError("The store keeps its metadata in SQLite on this machine, which a step on a cluster cannot reach.",
                          hint="Export a store made with `dpl init --metadata postgresql://...`, or name it with --metadata.")


def without_password(url: str) -> str:
    """`url` with no password in it (neither user:password@ nor ?password=): it goes to the pod as PGPASSWORD."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _resources(spec: Spec, key: str) -> dict:
    raw = spec.raw.get(key) or {}
    found = {k: str(raw[k]) for k in ("cpu", "memory") if raw.get(k) not in (None, "", 0)}
    gpu = raw.get("gpu") or {}
    if gpu.get("number"):
        found["gpu"] = int(gpu["number"])
        found["gpu_type"] = gpu.get("type") or "nvidia.com/gpu"
    return found


def _dag_order(ups: dict[str, list[str]]) -> list[str]:
    """Every pipeline after those it reads from; among those ready at once, by name."""
    order, done = [], set()
    while len(order) < len(ups):
        ready = sorted(n for n in ups if n not in done and all(u in done for u in ups[n]))
        if not ready:  # the store refuses cyclic pipelines; this only guards the loop
            raise ExportError(f"Pipelines {', '.join(sorted(set(ups) - done))} read each other's outputs in a cycle.")
        order += ready
        done.update(ready)
    return order


def _k8s_name(text: str) -> str:
    """`text` as a DNS-1123 label: lower case letters, digits and '-', 63 at most."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "step"


def _k8s_names(pipelines: list[str], taken: set[str]) -> dict[str, str]:
    """A distinct label per pipeline, none of them `taken` (`Train_A` and `train-a` differ in dpl, not once lowered)."""
    taken = set(taken)
    names = {}
    for p in sorted(pipelines):
        base = candidate = _k8s_name(p)
        i = 2
        while candidate in taken:
            candidate = f"{base[:60]}-{i}"
            i += 1
        taken.add(candidate)
        names[p] = candidate
    return names
