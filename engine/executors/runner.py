"""The step runner: what running one datum means, whatever runs it.

Every executor runs a datum the same way: lay its inputs out where the step
will see them as `/pfs/<input>`, give the step the spec's command, stdin and
environment, stop it when the datum or the job runs out of time, keep the
tail of its logs, judge its exit code against `accept_return_code`, and
store what it left in `/pfs/out`.  That is `run_step`, written once.

An executor only provides a `Box`: the place where one step runs (a
bubblewrap sandbox, a plain subprocess, a container), which it starts and
stops, and in which `run` executes a command.  So a new backend is a Box and
the code that starts and stops it, and every backend words a timeout, an
accepted exit code or a cancelled step the same way.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .base import DatumResult, DatumTask, JobContext
from ..errors import BadOutput
from ..workspace import ChunkReader, collect, materialize

LOG_LIMIT = 1 << 20  # bytes of stdout/stderr kept per datum (the tail)
PFS = "/pfs/"


@dataclass
class Step:
    """One command to run, as the step will see it."""

    argv: list[str]
    env: dict[str, str]
    stdin: bytes


@dataclass
class Ran:
    """What a Box saw of a step: its exit code (None when it never ran or
    was killed), why it failed if the box knows (an image without the
    program, out of memory, a container that died), and its logs' tails."""

    code: int | None
    error: str | None = None
    stdout: bytes = b""
    stderr: bytes = b""


class Box(Protocol):
    """Where one step runs; an executor makes one per slot (or per datum)."""

    pfs: Path  # the host directory the step sees as /pfs (one sub-directory per input)
    out: Path  # the host directory the step sees as /pfs/out
    inherit: dict[str, str]  # the environment a step starts from, before the spec's
    maps_pfs: bool  # True when the step sees host paths: /pfs/ in argv, stdin and env is rewritten to `pfs`

    def prepare(self) -> None:
        """Make `pfs` and `out` empty for the next datum (starting the box if need be)."""

    def run(self, step: Step) -> Ran:
        """Run the step to its end (or until `kill`) and report it."""

    def kill(self) -> None:
        """End the running step now; called from another thread on a timeout."""

    def release(self) -> None:
        """After the datum: drop what only this datum used."""


def run_step(ctx: JobContext, task: DatumTask, box: Box, cache_dir: str | None = None) -> DatumResult:
    """Run one datum's step in `box` and report it, outputs stored as chunks."""
    result = DatumResult(task.datum, None, started=time.time())
    try:
        box.prepare()
        materialize(reader(ctx), task, str(box.pfs), cache_dir=cache_dir)
        step = command(ctx, task, box)
        reasons: list[str] = []
        timer = arm_timer(ctx, box.kill, reasons)
        try:
            ran = box.run(step)
        finally:
            if timer is not None:
                timer.cancel()
        result.exit_code, result.error, result.stdout, result.stderr = ran.code, ran.error, ran.stdout, ran.stderr
        if reasons:
            result.exit_code, result.error = None, reasons[0]
        elif ctx.cancelled.is_set() and (ran.code is None or ran.code < 0 or ran.error):
            result.exit_code, result.error = None, "cancelled"
        judge(ctx, result)
        if result.ok:
            result.outputs = (ctx.collect or collect_outputs)(ctx, task, box)
    except UnreadableOutput as e:
        result.exit_code, result.error = None, str(e)
    finally:
        box.release()
        result.finished = time.time()
    return result


def reader(ctx: JobContext) -> ChunkReader:
    if ctx.reader is None:
        ctx.reader = ChunkReader(ctx.chunks)  # a race makes two readers, each fine on its own
    return ctx.reader


# ------------------------------------------------------------------- the step


def command(ctx: JobContext, task: DatumTask, box: Box) -> Step:
    """The spec's cmd and stdin with the environment every executor gives a step:
    what the box inherits < the spec's env < the secrets' env_vars < PACH_* and input paths."""
    t = ctx.spec.transform
    argv, stdin = list(t["cmd"]), "\n".join(t.get("stdin", []))
    env = {**box.inherit, **t.get("env", {}), **ctx.secrets, **task.env}
    if box.maps_pfs:  # no mount namespace: the step sees the datum's real directory instead of /pfs
        real = str(box.pfs) + "/"
        argv = [a.replace(PFS, real) for a in argv]
        stdin = stdin.replace(PFS, real)
        env = {k: v.replace(PFS, real) if v.startswith(PFS) else v for k, v in env.items()}
        env["PFS"] = str(box.pfs)
    return Step(argv, env, (stdin + "\n" if stdin else "").encode())


def datum_timeout_message(ctx: JobContext) -> str:
    return f"timed out after {ctx.spec.raw.get('datum_timeout')} (datum_timeout)"


def job_timeout_message(ctx: JobContext) -> str:
    return f"killed when the job timed out after {ctx.spec.raw.get('job_timeout')} (job_timeout)"


def oom_message(ctx: JobContext) -> str:
    memory = ctx.spec.raw.get("resource_limits", {}).get("memory")
    return "killed: out of memory" + (f" (resource_limits.memory {memory})" if memory else "")


def arm_timer(ctx: JobContext, kill, reasons: list[str]) -> threading.Timer | None:
    """Call `kill` (and say why in `reasons`) when the datum or the job runs out of time.

    A timer rather than a polling wait: the step's wait then blocks until
    the step ends, and a short datum pays no poll interval."""
    limits = []
    if ctx.spec.datum_timeout:
        limits.append((ctx.spec.datum_timeout, datum_timeout_message(ctx)))
    left = ctx.time_left()
    if left is not None:
        limits.append((left, job_timeout_message(ctx)))
    if not limits:
        return None
    seconds, why = min(limits)

    def expire():
        reasons.append(why)
        kill()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def judge(ctx: JobContext, result: DatumResult) -> None:
    """An exit code in `accept_return_code` counts as success (recorded as 0)."""
    if result.error is not None:
        return
    if result.exit_code in set(ctx.spec.transform.get("accept_return_code", [])) | {0}:
        result.exit_code = 0
    else:
        result.error = f"exited with code {result.exit_code}"


def failed(task: DatumTask, error: str, stderr: bytes = b"") -> DatumResult:
    """A datum whose step never ran to an exit code."""
    now = time.time()
    return DatumResult(task.datum, None, stderr=stderr, error=error, started=now, finished=now)


def tail(path: str | os.PathLike) -> bytes:
    """The last LOG_LIMIT bytes of a log file; nothing when the step never started."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_LIMIT))
            return f.read()
    except FileNotFoundError:
        return b""


# -------------------------------------------------------------------- outputs


class UnreadableOutput(Exception):
    """The step left something in /pfs/out that dpl cannot read."""


def collect_outputs(ctx: JobContext, task: DatumTask, box: Box):
    """Store what the step left in /pfs/out; its links into /pfs are followed."""
    pfs_map = {f"/pfs/{i.name}": str(box.pfs / i.name) for i in task.inputs}
    pfs_map["/pfs/out"] = str(box.out)
    try:
        if os.geteuid() != 0:  # os.walk skips what it cannot list: a silently missing output is worse than an error
            for _ in os.walk(box.out, onerror=_raise):
                pass
        return collect(ctx.chunks, str(box.out), pfs_map=pfs_map, inputs=task.inputs)
    except BadOutput as e:  # a dangling link, a pipe: the datum's error, worded as its other errors are
        raise UnreadableOutput(e.message.rstrip(".") + (f" ({e.hint[:1].lower()}{e.hint[1:].rstrip('.')})" if e.hint else "")) from None
    except PermissionError as e:
        where = "/pfs/out" + str(e.filename)[len(str(box.out)):] if e.filename else "/pfs/out"
        raise UnreadableOutput(f"dpl (uid {os.geteuid()}) cannot read {where}, which the step wrote ({e.strerror})") from None


def _raise(error: OSError) -> None:
    raise error
