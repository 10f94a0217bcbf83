"""The docker executor: each datum's step runs in the spec's image, in containers the job keeps.

A job keeps up to `slots()` long-lived containers, each started with its
slot's first datum (so a job that skips every datum starts none).  Each one
bind-mounts a host directory of its own: `pfs/` read-only at `/pfs` (the
datum's inputs, laid out by `workspace.materialize`), `out/` writable at
`/pfs/out`, and a small control directory at `/.dpl`.  A datum is the step
runner's (`runner.run_step`) on one of the Boxes of `dockerbox`: it
re-populates the slot's directories on the host, has the step run in the
container, and collects `out/`.  The container sees nothing of the host but
those directories and the secret files its spec names.  Reaching the engine
(the client, the image, the containers of dead processes) is `dockerengine`.

Why a resident agent rather than `docker exec` per datum: an exec costs a
`runc exec` (a fresh runc process joining the container's namespaces and
cgroups), measured at 45-80 ms on a 2-CPU machine, more than the whole
budget of a trivial datum.  So the container's main process is a
ten-line POSIX shell loop (`AGENT`): it reads a sequence number from a FIFO,
runs the datum's script (`run.sh`: exports, then `exec` of the spec's cmd)
in a subshell with stdin/stdout/stderr redirected to files, and writes the
exit status back on a second FIFO.  A datum then costs a fork in the
container and a few host file writes.  Images without `/bin/sh` (distroless,
scratch) still run, one container per datum, which is slower and says so.

Timeouts, cancellation and deaths are handled by killing the slot's
container and starting a fresh one: nothing the step left running can
outlive it.  A step killed by the kernel's OOM killer is recognised from the
engine's `oom` event for the container and reported as such.

Ownership: the step runs as the spec's `user` (or the image's), which may
differ from the uid running dpl.  `out/` is world-writable and inputs are
world-readable.  When dpl itself is not root, the agent opens up whatever
the step left in `/pfs/out` (`chmod -R a+rwX`) so that dpl can read and
delete it; an output dpl still cannot read fails the datum by name rather
than go missing, and a directory it cannot empty moves the slot to fresh
directories rather than show a datum another datum's files.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from docker.errors import APIError, NotFound
from docker.types import DeviceRequest, Mount

from . import dockerengine
from .base import DatumResult, DatumTask, JobContext
from .dockerbox import _AgentBox, _OneShotBox, _reason, _remove, _Slot
from .dockerengine import LABEL
from .runner import oom_message, run_step
from ..spec import parse_memory
from ..errors import ExecutorUnavailable

log = logging.getLogger("dpl")

CTL = "/.dpl"  # where a slot's control directory appears in its container
READY_SECONDS = 60.0

# The resident agent.  $1 is the control directory.  Both FIFOs are opened
# read-write so that neither side ever blocks in open() or sees EOF; the step
# gets neither descriptor.
AGENT = r"""
exec 3<>"$1/in" 4<>"$1/out"
echo ready >&4
while read -r seq <&3; do
  ( . "$1/run.sh" ) <"$1/stdin" >"$1/stdout" 2>"$1/stderr" 3<&- 4<&-
  echo "$seq $?" >&4
done
"""


class _NoShell(Exception):
    """The image has no /bin/sh for the agent."""


class _Job:
    """What one job keeps between `start` and `stop`."""

    def __init__(self, client, image: str, image_id: str, ctx: JobContext):
        self.client = client
        self.image = image
        self.image_id = image_id
        self.mode = "agent"
        self.slots: list[_Slot] = []
        self.free: queue.Queue[_Slot] = queue.Queue()
        self.cache = ctx.scratch / "cache"
        self.secret_dir = ctx.scratch / "secrets"
        self.secret_mounts: list[Mount] = []


class DockerExecutor:
    kind = "docker"

    def __init__(self, config: dict | None = None):
        self.config = config or {}
        self._jobs: dict[tuple[str, str], _Job] = {}

    # --------------------------------------------------------------- protocol

    def slots(self, ctx: JobContext) -> int:
        return ctx.spec.parallelism

    def start(self, ctx: JobContext) -> dict:
        image = ctx.spec.transform.get("image")
        if not image:
            raise ExecutorUnavailable(
                f"Pipeline {ctx.pipeline!r} has no transform.image, which the docker executor needs.",
                hint="Add an image to the spec, or run it with --executor local.",
            )
        client = dockerengine.client(ctx, self.config, self.slots(ctx))
        found = dockerengine.image(client, ctx, image)
        dockerengine.sweep(client)
        ctx.scratch.mkdir(parents=True, exist_ok=True)
        job = _Job(client, image, found.id, ctx)
        job.cache.mkdir(exist_ok=True)
        self._jobs[(ctx.pipeline, ctx.job)] = job
        self._write_secret_files(ctx, job)
        # Containers start with a slot's first datum: a job whose datums are all
        # skipped (the common incremental case) starts none.
        for i in range(self.slots(ctx)):
            job.slots.append(_Slot(ctx.scratch / f"slot-{i}"))
            job.free.put(job.slots[-1])
        info = {"kind": "docker", "image": image, "image_digest": found.id}
        repo_digests = found.attrs.get("RepoDigests") or []
        if repo_digests:
            info["repo_digest"] = repo_digests[0]
        return info

    def cancel(self, ctx: JobContext) -> None:
        # A box waiting for its step looks at ctx.cancelled every half second and then removes
        # its own container (one owner for it: see dockerbox), so the flag is all it takes.
        pass

    def stop(self, ctx: JobContext) -> None:
        job = self._jobs.pop((ctx.pipeline, ctx.job), None)
        if job is None:
            return
        self._remove_containers(job)
        for slot in job.slots:
            shutil.rmtree(slot.root, ignore_errors=True)
        shutil.rmtree(job.secret_dir, ignore_errors=True)

    def run_datum(self, ctx: JobContext, task: DatumTask) -> DatumResult:
        job = self._jobs[(ctx.pipeline, ctx.job)]
        slot = job.free.get()
        try:
            if job.mode == "agent":
                try:
                    return run_step(ctx, task, _AgentBox(self, ctx, job, slot), cache_dir=str(job.cache))
                except _NoShell:
                    _remove(slot.container)
                    slot.container = None
                    if job.mode == "agent":
                        job.mode = "container"
                        log.warning("image %s has no /bin/sh: pipeline %r runs one container per datum, which costs a "
                                    "container start each.", job.image, ctx.pipeline)
            return run_step(ctx, task, _OneShotBox(self, ctx, job, slot), cache_dir=str(job.cache))
        finally:
            job.free.put(slot)

    def debug_container(self, ctx: JobContext, env: dict[str, str]):
        """A slot (removed by `stop`) whose idle container has the job's image, options, mounts and `env`: `dpl debug-datum` execs in it."""
        job = self._jobs[(ctx.pipeline, ctx.job)]
        slot = _Slot(ctx.scratch / "debug")
        job.slots.append(slot)
        mounts = [Mount("/pfs", str(slot.pfs), type="bind", read_only=True), Mount("/pfs/out", str(slot.out), type="bind")]
        slot.container = self._create(ctx, job, mounts, entrypoint=["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                                      command=[], environment=env)
        slot.container.start()  # a failure here is the engine's (the image has a shell: the job ran in it)
        return slot, slot.container

    # ------------------------------------------------------------ containers

    def _container_options(self, ctx: JobContext, job: _Job) -> dict:
        t = ctx.spec.transform
        limits = ctx.spec.raw.get("resource_limits", {})
        opts = {
            "detach": True,
            "init": True,  # tini as pid 1 reaps what steps leave behind
            "labels": {LABEL: "docker", "dpl.owner": dockerengine.owner(), "dpl.pipeline": ctx.pipeline, "dpl.job": ctx.job},
            "network_mode": None if ctx.spec.network else "none",
        }
        if t.get("user"):
            opts["user"] = t["user"]
        if t.get("working_dir"):
            opts["working_dir"] = t["working_dir"]
        memory = parse_memory(limits.get("memory"))
        if memory:
            opts["mem_limit"] = memory
            opts["memswap_limit"] = memory  # no swap: over the limit is out of memory, as in Kubernetes
        if limits.get("cpu"):
            opts["nano_cpus"] = int(float(limits["cpu"]) * 1e9)
        gpus = (limits.get("gpu") or {}).get("number")
        if gpus:
            opts["device_requests"] = [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
        return opts

    def _write_secret_files(self, ctx: JobContext, job: _Job) -> None:
        if not ctx.secret_files:
            return
        job.secret_dir.mkdir(mode=0o700)
        for i, (mount_path, data) in enumerate(sorted(ctx.secret_files.items())):
            host = job.secret_dir / f"{i}"
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # the dir keeps other host users out
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            job.secret_mounts.append(Mount(mount_path, str(host), type="bind", read_only=True))

    def _create(self, ctx: JobContext, job: _Job, mounts: list[Mount], **kw):
        opts = {**self._container_options(ctx, job), **kw}
        try:
            return job.client.containers.create(job.image, mounts=mounts + job.secret_mounts, **opts)
        except (APIError, requests.RequestException) as e:
            raise ExecutorUnavailable(
                f"Pipeline {ctx.pipeline!r} cannot run on docker: the engine refused to create a container of {job.image!r} ({_reason(e)})."
            ) from None

    # ------------------------------------------------------------ agent mode

    def _launch(self, ctx: JobContext, job: _Job, slot: _Slot) -> None:
        """Start the slot's container and wait until its agent is ready."""
        slot.close_fds()
        ctl = slot.root / f"ctl-{time.time_ns()}"
        ctl.mkdir(mode=0o755)
        os.chmod(ctl, 0o755)
        for name in ("in", "out"):
            os.mkfifo(ctl / name)
            os.chmod(ctl / name, 0o666)
        for name in ("stdin", "stdout", "stderr", "run.sh"):
            (ctl / name).touch()
            os.chmod(ctl / name, 0o666 if name in ("stdout", "stderr") else 0o644)
        slot.ctl = ctl
        slot.fd_in = os.open(ctl / "in", os.O_RDWR)
        slot.fd_out = os.open(ctl / "out", os.O_RDWR | os.O_NONBLOCK)
        mounts = [
            Mount("/pfs", str(slot.pfs), type="bind", read_only=True),
            Mount("/pfs/out", str(slot.out), type="bind"),
            Mount(CTL, str(ctl), type="bind"),
        ]
        container = self._create(
            ctx, job, mounts, entrypoint=["/bin/sh", "-c", AGENT, "dpl-agent", CTL], command=[], environment=dict(ctx.secrets)
        )
        slot.container = container
        try:
            container.start()
        except APIError as e:
            if _missing_shell(_reason(e)):
                raise _NoShell() from None
            raise ExecutorUnavailable(f"Pipeline {ctx.pipeline!r} cannot run on docker: a container of {job.image!r} did not start ({_reason(e)}).") from None
        deadline = time.time() + READY_SECONDS
        while time.time() < deadline:
            if "ready" in slot.receive(0.5):
                return
            container.reload()
            if container.status not in ("created", "running"):
                logs = container.logs().decode("utf-8", "replace").strip()
                if _missing_shell(logs) or container.attrs["State"].get("ExitCode") == 127:
                    raise _NoShell()
                raise ExecutorUnavailable(
                    f"Pipeline {ctx.pipeline!r} cannot run on docker: a container of {job.image!r} stopped as it started"
                    f" (exit code {container.attrs['State'].get('ExitCode')}{': ' + logs.splitlines()[-1] if logs else ''})."
                )
        raise ExecutorUnavailable(f"Pipeline {ctx.pipeline!r} cannot run on docker: a container of {job.image!r} was not ready after {READY_SECONDS:.0f}s.")

    def _renew(self, ctx: JobContext, job: _Job, slot: _Slot, fresh_dirs: bool = False) -> None:
        """Replace the slot's container (killing whatever runs in it)."""
        _remove(slot.container)
        slot.container = None
        if slot.ctl is not None:
            shutil.rmtree(slot.ctl, ignore_errors=True)
        if fresh_dirs:
            slot.fresh_dirs()
        self._launch(ctx, job, slot)

    def _died(self, ctx: JobContext, container) -> str | None:
        """Why the container is no longer running, if it is not."""
        try:
            container.reload()
        except NotFound:
            return "its container disappeared (removed from outside dpl)"
        except (APIError, requests.RequestException) as e:
            return f"the Docker engine stopped answering ({_reason(e)})"
        if container.status == "running":
            return None
        state = container.attrs.get("State", {})
        if state.get("OOMKilled"):
            return oom_message(ctx)
        return f"its container stopped unexpectedly (exit code {state.get('ExitCode')})"

    def _oom_since(self, job: _Job, slot: _Slot, since: float) -> bool:
        """Did the kernel kill something in this container for memory since `since`?

        A process killed inside a container that keeps running does not set
        the container's OOMKilled; the engine's `oom` event does tell.  The
        event may trail the exit by a moment, hence the short retry.
        """
        for _ in range(5):
            now = time.time()
            events = job.client.events(
                since=f"{since - 1:.9f}", until=f"{now:.9f}", filters={"container": slot.container.id, "event": "oom"}, decode=True
            )
            if any(True for _ in events):
                return True
            time.sleep(0.1)
        return False

    def _clear(self, slot: _Slot) -> bool:
        """Empty the slot's directories for the next datum; False if that is impossible."""
        try:
            for entry in os.scandir(slot.pfs):
                if entry.name != "out":
                    shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
            for entry in os.scandir(slot.out):
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
            return True
        except OSError as e:
            log.warning("cannot empty %s (%s): the slot moves to fresh directories", slot.root, e.strerror)
            return False

    def _remove_containers(self, job: _Job) -> None:
        containers = [s.container for s in job.slots if s.container is not None]
        for slot in job.slots:
            slot.container = None
            slot.close_fds()
        if containers:
            with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
                list(pool.map(_remove, containers))


def _missing_shell(text: str) -> bool:
    return "/bin/sh" in text and ("no such file" in text.lower() or "not found" in text.lower())
