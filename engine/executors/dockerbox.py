"""The docker executor's boxes: where one datum's step runs, in a container.

`_AgentBox` hands a datum to the resident agent of a slot's long-lived
container (see `docker.py` for why an agent and not `docker exec`);
`_OneShotBox` runs one container per datum, for images without /bin/sh.
Both are `runner.Box`es: the step runner does the rest.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from docker.errors import APIError, NotFound
from docker.types import Mount

from .base import JobContext
from .runner import LOG_LIMIT, Ran, Step, oom_message, tail

if TYPE_CHECKING:  # docker.py imports this module
    from .docker import DockerExecutor, _Job

ALIVE_CHECK_SECONDS = 2.0

log = logging.getLogger("dpl")


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


class _AgentBox:
    """A `runner.Box` on a slot's resident container: a datum is a line to its agent."""

    inherit: dict[str, str] = {}  # the image's environment, as Docker gives it
    maps_pfs = False

    def __init__(self, executor: "DockerExecutor", ctx: JobContext, job: "_Job", slot: _Slot):
        self.executor, self.ctx, self.job, self.slot = executor, ctx, job, slot
        self.killed = False

    @property
    def pfs(self) -> Path:
        return self.slot.pfs

    @property
    def out(self) -> Path:
        return self.slot.out

    def prepare(self) -> None:
        cleared = self.executor._clear(self.slot)
        if self.slot.container is None or not cleared:
            self.executor._renew(self.ctx, self.job, self.slot, fresh_dirs=not cleared)

    def run(self, step: Step) -> Ran:
        slot, ctl = self.slot, self.slot.ctl
        _write(ctl / "run.sh", _script(self.ctx, step).encode(), 0o644)
        _write(ctl / "stdin", step.stdin, 0o644)
        for name in ("stdout", "stderr"):
            os.truncate(ctl / name, 0)
        slot.seq += 1
        started = time.time()
        slot.send(slot.seq)
        code, error = self._wait(slot.seq)
        ran = Ran(code, error, tail(ctl / "stdout"), tail(ctl / "stderr"))
        if error is not None:
            # Killed, timed out or dead: nothing of the step may survive into the next datum,
            # which (if there is one) starts a fresh container.
            _remove(slot.container)
            slot.container = None
        elif code == 137 and self.executor._oom_since(self.job, slot, started):
            ran.error = oom_message(self.ctx)
        return ran

    def _wait(self, seq: int) -> tuple[int | None, str | None]:
        next_check = time.time() + ALIVE_CHECK_SECONDS
        while True:
            for line in self.slot.receive(0.5):
                got, _, rc = line.partition(" ")
                if got == str(seq):
                    return int(rc), None
            if self.killed:
                return None, "killed"
            if self.ctx.cancelled.is_set():
                return None, "cancelled"
            if time.time() >= next_check:
                next_check = time.time() + ALIVE_CHECK_SECONDS
                dead = self.executor._died(self.ctx, self.slot.container)
                if dead:
                    return None, dead

    def kill(self) -> None:
        self.killed = True  # the waiting thread removes the container: one owner for it

    def release(self) -> None:
        pass


class _OneShotBox:
    """A `runner.Box` for images without a shell: a container per datum, with the datum's env."""

    inherit: dict[str, str] = {}
    maps_pfs = False

    def __init__(self, executor: "DockerExecutor", ctx: JobContext, job: "_Job", slot: _Slot):
        self.executor, self.ctx, self.job, self.slot = executor, ctx, job, slot
        self.work = slot.root / f"datum-{time.time_ns()}"
        self.pfs, self.out = self.work / "pfs", self.work / "out"
        self.container = None
        self.killed = False

    def prepare(self) -> None:
        (self.pfs / "out").mkdir(parents=True)
        self.out.mkdir()
        os.chmod(self.out, 0o777)

    def run(self, step: Step) -> Ran:
        job = self.job
        mounts = [Mount("/pfs", str(self.pfs), type="bind", read_only=True), Mount("/pfs/out", str(self.out), type="bind")]
        self.container = container = self.executor._create(
            # detach=False with stdin_open makes docker-py ask for StdinOnce: our close of stdin is the step's EOF.
            self.ctx, job, mounts, entrypoint=step.argv, command=[], environment=step.env,
            stdin_open=bool(step.stdin), detach=not step.stdin, init=False,
        )
        sock = None
        if step.stdin:
            sock = job.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
        try:
            container.start()
        except APIError as e:
            return Ran(None, f"cannot run {step.argv[0]!r}: {_reason(e)}")
        if sock is not None:
            raw = getattr(sock, "_sock", sock)
            raw.sendall(step.stdin)
            raw.shutdown(socket.SHUT_WR)
            sock.close()
        while True:
            try:
                code = job.client.api.wait(container.id, timeout=0.5).get("StatusCode")
                break
            except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
                pass  # docker-py reports a read timeout of `wait` either way
            if self.killed:
                return Ran(None, "killed")
            if self.ctx.cancelled.is_set():
                return Ran(None, "cancelled")
        ran = Ran(code, None, container.logs(stdout=True, stderr=False)[-LOG_LIMIT:], container.logs(stdout=False, stderr=True)[-LOG_LIMIT:])
        container.reload()
        if container.attrs["State"].get("OOMKilled"):
            ran.error = oom_message(self.ctx)
        return ran

    def kill(self) -> None:
        self.killed = True

    def release(self) -> None:
        _remove(self.container)
        shutil.rmtree(self.work, ignore_errors=True)


def _script(ctx: JobContext, step: Step) -> str:
    """The agent's run.sh: the step's environment, then its command.  Secret values
    are in the container's own environment, so that no file on the host holds them."""
    env = {k: v for k, v in step.env.items() if ctx.secrets.get(k) != v}
    lines = [f"export {shlex.quote(f'{k}={v}')}" for k, v in env.items()]
    cmd = " ".join(shlex.quote(c) for c in step.argv)
    if os.geteuid() == 0:
        lines.append(f"exec {cmd}")
    else:
        # dpl cannot read or delete what another uid wrote with private modes: open them up afterwards.
        lines += [cmd, "status=$?", "chmod -R a+rwX /pfs/out 2>/dev/null", "exit $status"]
    return "\n".join(lines) + "\n"



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
