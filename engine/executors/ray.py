"""The Ray executor: every datum is a Ray task on an existing Ray cluster.

The coordinator (the `dpl` process running the job) connects to the cluster
at `ray_address` in the store's config.json, else RAY_ADDRESS, else "auto"
(the cluster this machine belongs to), and submits one task per datum with
the spec's `resource_requests` as the task's resources.  A task carries
file references, never file bytes: the worker opens the store's chunk store
itself (an S3 bucket, or a local store directory every node can see),
materialises the datum's inputs, runs the step in the local executor's
sandbox, stores the outputs as chunks and returns their index rows.  Only
the coordinator writes metadata; a worker's chunks are referenced by nothing
until the coordinator records the datum it returned.

Failures come in two kinds, retried by two budgets that add up rather than
multiply:

* the step failed (non-zero exit, timeout, out of memory): an ordinary
  failed `DatumResult`, retried by the job runner `datum_tries` times;
* the attempt was lost (the worker process or its node died): Ray is told
  never to retry (`max_retries=0`) so that the loss is seen here, and the
  datum is resubmitted at once, up to `ray_max_retries` times per datum per
  job, without using one of the step's tries.  The budget is shared by the
  runner's tries, so a datum runs at most `datum_tries + ray_max_retries`
  times, and each loss is written at the head of the datum's log.

A lost attempt can leave chunks behind, never a row: outputs are
content-addressed and reported only by a task that finished.  What runs in
the worker process is rayworker.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import ray
import ray.exceptions as rex

from .base import DatumResult, DatumTask, JobContext
from .rayworker import run_on_worker
from .runner import failed, job_timeout_message
from ..spec import parse_memory
from ..errors import ExecutorUnavailable

log = logging.getLogger("dpl")

DEFAULT_ADDRESS = "auto"
DEFAULT_SYSTEM_RETRIES = 3
MAX_SLOTS = 256  # coordinator threads waiting on tasks; more only adds queueing in Ray
DEADLINE_GRACE = 5.0  # seconds past job_timeout before a task that never returned is killed

# An attempt lost to the cluster, not failed by the step: resubmitted.
LOST = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError)

_connect_lock = threading.Lock()


def connect(address: str) -> None:
    """Join the Ray cluster at `address` as a driver, once per process."""
    with _connect_lock:
        if ray.is_initialized():
            return
        _probe(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, namespace="dpl")
        except Exception as e:  # ConnectionError, version mismatches, bad addresses: all one story for a user
            raise _no_cluster(address, _first_line(e)) from None
        _quiet_raylet_messages()


def _probe(address: str) -> None:
    """Fail fast when nothing listens at a host:port address: `ray.init` would
    wait for the cluster's GCS for minutes, printing a warning every few seconds."""
    if address in ("auto", "local") or ":" not in address:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise _no_cluster(address, (e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__).lower()) from None


def _no_cluster(address: str, why: str) -> ExecutorUnavailable:
    # The advice is in the sentence itself: a job's error keeps the message only.
    return ExecutorUnavailable(
        f"Cannot reach a Ray cluster at {address!r} ({why.rstrip('.')}): start one with `ray start --head`, "
        "or point dpl at yours with RAY_ADDRESS or \"ray_address\" in the store's config.json.",
        hint="See the README section on running on a cluster.",
    )


def _quiet_raylet_messages() -> None:
    """Send the raylet's messages to the driver ("a worker died...") to dpl's debug log.

    Ray prints them straight to the terminal, whatever `log_to_driver` says;
    dpl already says in one line what a lost attempt means for the datum.
    Best effort: this reaches into Ray's private module, and does nothing
    when its shape changes.
    """
    import ray._private.worker as rw

    original = getattr(rw, "print_to_stdstream", None)
    if original is None or getattr(original, "_dpl", False):
        return

    def print_to_stdstream(data, *args, **kwargs):
        if isinstance(data, dict) and data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.debug("ray: %s", line)
            return
        return original(data, *args, **kwargs)

    print_to_stdstream._dpl = True
    rw.print_to_stdstream = print_to_stdstream


def task_resources(spec) -> dict:
    """The spec's resource_requests as Ray task options (Ray's default is one CPU)."""
    req = spec.raw.get("resource_requests", {})
    options: dict = {"num_cpus": float(req["cpu"]) if "cpu" in req else 1.0}
    memory = parse_memory(req.get("memory"))
    if memory:
        options["memory"] = memory
    gpus = int(req.get("gpu", {}).get("number", 0) or 0)
    if gpus:
        options["num_gpus"] = gpus
    return options


def _fits(node: dict, options: dict) -> int:
    """How many tasks with these options one node can run at once."""
    have = node.get("Resources", {})
    n = None
    for key, res in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        want = options.get(key)
        if not want:
            continue
        k = int(have.get(res, 0) // want)
        n = k if n is None else min(n, k)
    return 64 if n is None else n  # a task asking for nothing: Ray bounds it only by workers


class RayExecutor:
    kind = "ray"

    def __init__(self, config: dict):
        self.config = config
        self.address = config.get("ray_address") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
        self.system_retries = int(config.get("ray_max_retries", DEFAULT_SYSTEM_RETRIES))
        self._jobs: dict[str, _Job] = {}

    def start(self, ctx: JobContext) -> dict:
        connect(self.address)
        options = task_resources(ctx.spec)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        capacity = sum(_fits(n, options) for n in nodes)
        if capacity == 0 and not self.config.get("ray_autoscaling"):
            asked = ", ".join(f"{k}={v}" for k, v in options.items())
            raise ExecutorUnavailable(
                f"No node of the Ray cluster at {self.address!r} can run a datum of pipeline {ctx.pipeline!r} ({asked}): "
                "lower resource_requests in the spec or add a bigger node (with an autoscaler, "
                "set \"ray_autoscaling\": true in the store's config.json).",
            )
        env = {k: os.environ[k] for k in self.config.get("ray_env", []) if k in os.environ}
        remote = run_on_worker.options(
            **options,
            max_retries=0,  # a lost attempt is resubmitted by run_datum, where it can be counted and logged
            retry_exceptions=False,
            name=f"dpl-datum:{ctx.pipeline}",
            **({"runtime_env": {"env_vars": env}} if env else {}),
        )
        payload = {
            "job": ctx.job,
            "pipeline": ctx.pipeline,
            "spec": ctx.spec.raw,
            "store_root": str(ctx.store_root),
            "config": ctx.config,
            "secrets": ctx.secrets,
            "secret_files": ctx.secret_files,
            "code_dir": ctx.code_dir,
            "deadline": ctx.deadline,
        }
        self._jobs[ctx.job] = _Job(remote, ray.put(payload), capacity)
        return {
            "kind": "ray",
            "address": self.address,
            "ray": ray.__version__,
            "nodes": len(nodes),
            "cpus": sum(n.get("Resources", {}).get("CPU", 0) for n in nodes),
            "sandbox": "bwrap on each worker, where it is installed",
        }

    def slots(self, ctx: JobContext) -> int:
        # parallelism_spec sizes a fixed pool of workers in Pachyderm; on Ray the
        # cluster is the pool and resource_requests decide what fits on a node.
        # So: twice what the cluster can run at once (Ray starts the next queued
        # datum the moment one finishes, without waiting for a round trip to
        # this process), or parallelism_spec when that is larger (an autoscaler
        # adds nodes for work that is queued, never for work that is not).
        job = self._jobs.get(ctx.job)
        capacity = job.capacity if job else 1
        return max(1, min(MAX_SLOTS, max(ctx.spec.parallelism, 2 * capacity)))

    def cancel(self, ctx: JobContext) -> None:
        job = self._jobs.get(ctx.job)
        if job is not None:
            with job.lock:
                refs = list(job.running)
            for ref in refs:  # each waiting thread sees the cancelled task, and ctx.cancelled, at once
                _cancel(ref)

    def stop(self, ctx: JobContext) -> None:
        job = self._jobs.pop(ctx.job, None)
        if job is None:
            return
        for ref in list(job.running):
            _cancel(ref)

    def run_datum(self, ctx: JobContext, task: DatumTask) -> DatumResult:
        job = self._jobs[ctx.job]
        notes: list[str] = []
        while True:
            try:
                result = self._attempt(ctx, job, task)
            except LOST as e:
                with job.lock:
                    job.lost[task.datum] = lost = job.lost.get(task.datum, 0) + 1
                why = _describe_loss(e)
                if lost > self.system_retries:
                    notes.append(f"[dpl] attempt lost on the Ray cluster: {why}; no system retries left ({self.system_retries} per datum).")
                    return _failed(task, f"lost on the Ray cluster {lost} times (last: {why})", notes)
                notes.append(f"[dpl] attempt lost on the Ray cluster: {why}; resubmitted (system retry {lost} of {self.system_retries}).")
                log.warning("datum %s of %s: %s", task.datum[:12], ctx.pipeline, notes[-1][6:])
                continue
            except rex.OutOfMemoryError as e:
                return _failed(task, f"killed: out of memory ({_first_line(e)})", notes)
            except rex.RayTaskError as e:
                # Our own worker code raised (it turns every DplError into a result):
                # a bug or a broken worker environment, worth a try of the step's.
                return _failed(task, f"the Ray worker failed: {_first_line(e.cause if e.cause is not None else e)}", notes)
            except rex.RayError as e:
                return _failed(task, f"Ray could not run it: {_first_line(e)}", notes)
            if notes:
                result.stderr = ("\n".join(notes) + "\n").encode() + result.stderr
            return result

    def _attempt(self, ctx: JobContext, job: "_Job", task: DatumTask) -> DatumResult:
        ref = job.remote.remote(job.payload, task)
        with job.lock:
            job.running.add(ref)
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=0.5)
                if ready:
                    return ray.get(ref)
                if ctx.cancelled.is_set():
                    _cancel(ref)
                    return failed(task, "cancelled")
                # The worker enforces datum_timeout and job_timeout on the step;
                # this is the backstop for a task stuck before its step (queued).
                if ctx.deadline is not None and time.time() > ctx.deadline + DEADLINE_GRACE:
                    _cancel(ref)
                    return failed(task, job_timeout_message(ctx))
        finally:
            with job.lock:
                job.running.discard(ref)


class _Job:
    def __init__(self, remote, payload, capacity: int):
        self.remote, self.payload, self.capacity = remote, payload, capacity
        self.lock = threading.Lock()
        self.running: set = set()
        self.lost: dict[str, int] = {}  # datum -> attempts lost to the cluster, across the runner's tries


def _cancel(ref) -> None:
    """Kill the task's worker process; its bubblewrap sandbox dies with it.

    Not Ray's gentle cancel: that raises KeyboardInterrupt in the task only
    between Python bytecodes, and a worker waiting for its step is blocked
    in waitpid until the step ends by itself.
    """
    ray.cancel(ref, force=True)


def _failed(task: DatumTask, error: str, notes: list[str]) -> DatumResult:
    """A datum the cluster never ran to an exit code, with what happened to its attempts."""
    return failed(task, error, ("\n".join(notes) + "\n").encode() if notes else b"")


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _describe_loss(e: Exception) -> str:
    if isinstance(e, rex.WorkerCrashedError):
        return "the worker process died (killed, or crashed)"
    if isinstance(e, (rex.NodeDiedError, rex.LocalRayletDiedError)):
        return "its node died"
    return f"{type(e).__name__}: {_first_line(e)}"
