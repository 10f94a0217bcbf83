"""The docker executor: each datum's step runs in the spec's image, in containers the job keeps.

A job keeps up to `slots()` long-lived containers, each started with its
slot's first datum (so a job that skips every datum starts none).  Each one
bind-mounts a host directory of its own: `pfs/` read-only at `/pfs` (the
datum's inputs, laid out by `workspace.materialize`), `out/` writable at
`/pfs/out`, and a small control directory at `/.dpl`.  A datum re-populates
the slot's directories on the host, has the step run in the container, and
`workspace.collect`s `out/`.

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
import select
import shlex
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from .base import DatumResult, DatumTask, JobContext
from ..spec import parse_memory
from ..workspace import ChunkReader, collect, materialize
from ..errors import ExecutorUnavailable

log = logging.getLogger("dpl")

CTL = "/.dpl"  # where a slot's control directory appears in its container
READY_SECONDS = 60.0
ALIVE_CHECK_SECONDS = 2.0
LABEL = "dpl.executor"
LOG_LIMIT = 1 << 20  # bytes of stdout/stderr kept per datum (the tail), as the local executor keeps

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


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _reason(e: BaseException) -> str:
    """The root cause of a docker-py / requests error, in a few words."""
    if isinstance(e, APIError):
        return (e.explanation or str(e)).strip().rstrip(".")
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        for arg in getattr(e, "args", ()):
            if isinstance(arg, OSError) and arg.strerror:
                return arg.strerror
            if isinstance(arg, BaseException):
                inner = _reason(arg)
                if inner:
                    return inner
        e = e.__cause__ or e.__context__
    return ""


class _Slot:
    """One container and the host directories it mounts."""

    def __init__(self, root: Path):
        self.root = root
        self.gen = 0
        self.container = None
        self.ctl: Path | None = None
        self.fd_in = self.fd_out = -1
        self.buf = b""
        self.seq = 0
        self.fresh_dirs()

    def fresh_dirs(self) -> None:
        self.gen += 1
        self.pfs = self.root / f"pfs-{self.gen}"
        self.out = self.root / f"out-{self.gen}"
        (self.pfs / "out").mkdir(parents=True)  # the mount point of /pfs/out
        self.out.mkdir()
        os.chmod(self.pfs, 0o755)
        os.chmod(self.out, 0o777)  # any `user` may write its outputs

    def close_fds(self) -> None:
        for fd in (self.fd_in, self.fd_out):
            if fd >= 0:
                os.close(fd)
        self.fd_in = self.fd_out = -1
        self.buf = b""

    def send(self, seq: int) -> None:
        os.write(self.fd_in, f"{seq}\n".encode())

    def receive(self, timeout: float) -> list[str]:
        """Lines the agent wrote, waiting at most `timeout` for the first."""
        poller = select.poll()
        poller.register(self.fd_out, select.POLLIN)
        if poller.poll(max(0, int(timeout * 1000))):
            try:
                self.buf += os.read(self.fd_out, 65536)
            except BlockingIOError:
                pass
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode() for line in lines]


class _Job:
    """What one job keeps between `start` and `stop`."""

    def __init__(self, client, image: str, image_id: str, ctx: JobContext):
        self.client = client
        self.image = image
        self.image_id = image_id
        self.mode = "agent"
        self.slots: list[_Slot] = []
        self.free: queue.Queue[_Slot] = queue.Queue()
        self.reader = ChunkReader(ctx.chunks)
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
        client = self._client(ctx)
        found = self._image(client, ctx, image)
        _sweep(client)
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
                    return self._run_on_slot(ctx, job, slot, task)
                except _NoShell:
                    _remove(slot.container)
                    slot.container = None
                    if job.mode == "agent":
                        job.mode = "container"
                        log.warning("image %s has no /bin/sh: pipeline %r runs one container per datum, which costs a "
                                    "container start each.", job.image, ctx.pipeline)
            return self._run_oneshot(ctx, job, slot, task)
        finally:
            job.free.put(slot)

    # ------------------------------------------------------------ the engine

    def _client(self, ctx: JobContext):
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            client = docker.from_env(timeout=int(self.config.get("docker_timeout", 120)), max_pool_size=max(10, self.slots(ctx) + 4))
            client.ping()
            return client
        except (DockerException, requests.RequestException, OSError) as e:
            why = _reason(e) or type(e).__name__
            raise ExecutorUnavailable(
                f"Pipeline {ctx.pipeline!r} cannot run on docker: the Docker engine at {where} is not reachable ({why}).",
                hint="Start dockerd (or point DOCKER_HOST at a running engine), or run with --executor local.",
            ) from None

    def _image(self, client, ctx: JobContext, image: str):
        """The image, pulled if the engine does not have it (as Pachyderm would)."""
        try:
            return client.images.get(image)
        except ImageNotFound:
            pass
        except APIError as e:
            raise ExecutorUnavailable(f"Pipeline {ctx.pipeline!r} cannot run on docker: image {image!r} is not usable ({_reason(e)}).") from None
        log.warning("image %s is not on the Docker engine; pulling it", image)
        try:
            repo, tag = _split_tag(image)
            return client.images.pull(repo, tag=tag)
        except (APIError, DockerException, requests.RequestException) as e:
            raise ExecutorUnavailable(
                f"Pipeline {ctx.pipeline!r} cannot run on docker: image {image!r} is not on the Docker engine and could not be pulled ({_reason(e)}).",
                hint="Build or load it first (`docker build -t`, `docker load`), or fix transform.image.",
            ) from None

    def _container_options(self, ctx: JobContext, job: _Job) -> dict:
        t = ctx.spec.transform
        limits = ctx.spec.raw.get("resource_limits", {})
        opts = {
            "detach": True,
            "init": True,  # tini as pid 1 reaps what steps leave behind
            "labels": {LABEL: "docker", "dpl.owner": _owner(), "dpl.pipeline": ctx.pipeline, "dpl.job": ctx.job},
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

    def _run_on_slot(self, ctx: JobContext, job: _Job, slot: _Slot, task: DatumTask) -> DatumResult:
        result = DatumResult(task.datum, None, started=time.time())
        try:
            cleared = self._clear(slot)
            if slot.container is None or not cleared:
                self._renew(ctx, job, slot, fresh_dirs=not cleared)
            materialize(job.reader, task, str(slot.pfs), cache_dir=str(job.cache))
            ctl = slot.ctl
            _write(ctl / "run.sh", self._script(ctx, task).encode(), 0o644)
            stdin = "\n".join(ctx.spec.transform.get("stdin", []))
            _write(ctl / "stdin", (stdin + ("\n" if stdin else "")).encode(), 0o644)
            for name in ("stdout", "stderr"):
                os.truncate(ctl / name, 0)
            slot.seq += 1
            started = time.time()
            slot.send(slot.seq)
            result.exit_code, result.error = self._wait(ctx, job, slot, slot.seq)
            result.stdout, result.stderr = _tail(ctl / "stdout"), _tail(ctl / "stderr")
            if result.error is not None:
                # Killed, timed out or dead: nothing of the step may survive into the next datum,
                # which (if there is one) starts a fresh container.
                _remove(slot.container)
                slot.container = None
            elif result.exit_code == 137 and self._oom_since(job, slot, started):
                result.error = _oom_message(ctx)
            self._judge(ctx, result)
            if result.ok:
                result.outputs = self._collect(ctx, slot.out, slot.pfs, task)
        except _ReadError as e:
            result.exit_code, result.error = None, str(e)
        finally:
            result.finished = time.time()
        return result

    def _script(self, ctx: JobContext, task: DatumTask) -> str:
        t = ctx.spec.transform
        env = {k: v for k, v in t.get("env", {}).items() if k not in ctx.secrets}  # secrets are in the container's env
        env.update(task.env)
        lines = [f"export {shlex.quote(f'{k}={v}')}" for k, v in env.items()]
        cmd = " ".join(shlex.quote(c) for c in t["cmd"])
        if os.geteuid() == 0:
            lines.append(f"exec {cmd}")
        else:
            # dpl cannot read or delete what another uid wrote with private modes: open them up afterwards.
            lines += [cmd, "status=$?", "chmod -R a+rwX /pfs/out 2>/dev/null", "exit $status"]
        return "\n".join(lines) + "\n"

    def _wait(self, ctx: JobContext, job: _Job, slot: _Slot, seq: int) -> tuple[int | None, str | None]:
        limit = ctx.spec.datum_timeout
        started = time.time()
        next_check = started + ALIVE_CHECK_SECONDS
        while True:
            left = [x for x in (limit - (time.time() - started) if limit else None, ctx.time_left()) if x is not None]
            for line in slot.receive(min([0.5] + left)):
                got, _, rc = line.partition(" ")
                if got == str(seq):
                    return int(rc), None
            stop = _should_stop(ctx, started)
            if stop:
                return None, stop
            if time.time() >= next_check:
                next_check = time.time() + ALIVE_CHECK_SECONDS
                dead = self._died(ctx, slot.container)
                if dead:
                    return None, dead

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
            return _oom_message(ctx)
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

    # -------------------------------------------------- one container per datum

    def _run_oneshot(self, ctx: JobContext, job: _Job, slot: _Slot, task: DatumTask) -> DatumResult:
        """For images without a shell: a container per datum, with the datum's env."""
        result = DatumResult(task.datum, None, started=time.time())
        work = slot.root / f"datum-{time.time_ns()}"
        pfs, out = work / "pfs", work / "out"
        container = None
        try:
            (pfs / "out").mkdir(parents=True)
            out.mkdir()
            os.chmod(out, 0o777)
            materialize(job.reader, task, str(pfs), cache_dir=str(job.cache))
            t = ctx.spec.transform
            stdin = "\n".join(t.get("stdin", []))
            env = {**t.get("env", {}), **ctx.secrets, **task.env}
            mounts = [Mount("/pfs", str(pfs), type="bind", read_only=True), Mount("/pfs/out", str(out), type="bind")]
            container = self._create(
                # detach=False with stdin_open makes docker-py ask for StdinOnce: our close of stdin is the step's EOF.
                ctx, job, mounts, entrypoint=list(t["cmd"]), command=[], environment=env, stdin_open=bool(stdin), detach=not stdin, init=False
            )
            sock = None
            if stdin:
                sock = job.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
            try:
                container.start()
            except APIError as e:
                result.error = f"cannot run {t['cmd'][0]!r}: {_reason(e)}"
                return result
            if sock is not None:
                raw = getattr(sock, "_sock", sock)
                raw.sendall((stdin + "\n").encode())
                raw.shutdown(socket.SHUT_WR)
                sock.close()
            started = time.time()
            while True:
                try:
                    state = job.client.api.wait(container.id, timeout=0.5)
                    result.exit_code = state.get("StatusCode")
                    break
                except requests.exceptions.ConnectionError:
                    pass  # docker-py reports a read timeout of `wait` this way
                except requests.exceptions.ReadTimeout:
                    pass
                stop = _should_stop(ctx, started)
                if stop:
                    result.error = stop
                    break
            if result.error is None:
                result.stdout = container.logs(stdout=True, stderr=False)[-LOG_LIMIT:]
                result.stderr = container.logs(stdout=False, stderr=True)[-LOG_LIMIT:]
                container.reload()
                if container.attrs["State"].get("OOMKilled"):
                    result.error = _oom_message(ctx)
            self._judge(ctx, result)
            if result.ok:
                result.outputs = self._collect(ctx, out, pfs, task)
        except _ReadError as e:
            result.exit_code, result.error = None, str(e)
        finally:
            _remove(container)
            shutil.rmtree(work, ignore_errors=True)
            result.finished = time.time()
        return result

    # ---------------------------------------------------------------- common

    def _judge(self, ctx: JobContext, result: DatumResult) -> None:
        accepted = set(ctx.spec.transform.get("accept_return_code", [])) | {0}
        if result.error is None and result.exit_code in accepted:
            result.exit_code = 0
        elif result.error is None:
            result.error = f"exited with code {result.exit_code}"

    def _collect(self, ctx: JobContext, out: Path, pfs: Path, task: DatumTask):
        pfs_map = {f"/pfs/{i.name}": str(pfs / i.name) for i in task.inputs}
        pfs_map["/pfs/out"] = str(out)
        try:
            if os.geteuid() != 0:  # os.walk skips what it cannot list: a silently missing output is worse than an error
                for _ in os.walk(out, onerror=_raise):
                    pass
            return collect(ctx.chunks, str(out), pfs_map=pfs_map)
        except PermissionError as e:
            where = "/pfs/out" + str(e.filename)[len(str(out)):] if e.filename else "/pfs/out"
            raise _ReadError(f"dpl (uid {os.geteuid()}) cannot read {where}, which the step wrote ({e.strerror})") from None

    def _remove_containers(self, job: _Job) -> None:
        containers = [s.container for s in job.slots if s.container is not None]
        for slot in job.slots:
            slot.container = None
            slot.close_fds()
        if containers:
            with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
                list(pool.map(_remove, containers))


class _ReadError(Exception):
    pass


def _raise(error: OSError) -> None:
    raise error


def _should_stop(ctx: JobContext, started: float) -> str | None:
    limit = ctx.spec.datum_timeout
    if ctx.cancelled.is_set():
        return "cancelled"
    if limit and time.time() - started >= limit:
        return f"timed out after {ctx.spec.raw['datum_timeout']} (datum_timeout)"
    if ctx.deadline and time.time() >= ctx.deadline:
        return f"killed when the job timed out after {ctx.spec.raw['job_timeout']} (job_timeout)"
    return None


def _oom_message(ctx: JobContext) -> str:
    memory = ctx.spec.raw.get("resource_limits", {}).get("memory")
    return "killed: out of memory" + (f" (resource_limits.memory {memory})" if memory else "")


def _missing_shell(text: str) -> bool:
    return "/bin/sh" in text and ("no such file" in text.lower() or "not found" in text.lower())


def _split_tag(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


def _tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - LOG_LIMIT))
        return f.read()


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _remove(container) -> None:
    if container is None:
        return
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except (APIError, requests.RequestException) as e:
        if getattr(e, "status_code", None) != 409:  # 409: removal already in progress
            log.warning("could not remove container %s: %s", container.short_id, _reason(e))


_SWEPT: set[str] = set()


def _sweep(client) -> None:
    """Remove containers left by dpl processes of this host that died (once per process and engine)."""
    base = getattr(client.api, "base_url", "")
    if base in _SWEPT:
        return
    _SWEPT.add(base)
    host = socket.gethostname()
    try:
        containers = client.containers.list(all=True, filters={"label": LABEL})
    except (APIError, requests.RequestException):
        return
    for c in containers:
        owner = c.labels.get("dpl.owner", "")
        h, _, pid = owner.partition(":")
        if h != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:
            _remove(c)
        except PermissionError:
            continue
