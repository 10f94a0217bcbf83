"""The local executor (the embedded default): one sandbox per slot of a job.

With bubblewrap the step sees exactly Pachyderm's layout: `/pfs/<input>`
read-only, `/pfs/out` writable, the system directories, its interpreter and
its code read-only (`sandbox.mount_plan` says exactly what), a private
`/tmp`, its own pid namespace and no network (unless the spec's
`dpl.network` asks for it).  The store is not in it: nothing the step does
can read or change a stored byte.

Without bubblewrap (or with DPL_SANDBOX=none) the step runs as a plain
subprocess; `/pfs/` in its command, stdin and environment is rewritten to
the datum's real directory (`runner.command`) so that the same specs still
work, and the engine says once that the step is not isolated.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from .base import DatumResult, DatumTask, JobContext
from .runner import Ran, Step, failed, run_step, tail
from .sandbox import Sandbox, step_cwd
from ..errors import ExecutorUnavailable

log = logging.getLogger("dpl")


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """bubblewrap, if it is installed and can make a sandbox here."""
    if os.environ.get("DPL_SANDBOX", "").lower() in ("none", "subprocess", "0", "off"):
        return None
    path = shutil.which("bwrap")
    if not path:
        return None
    probe = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"], capture_output=True)
    return path if probe.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _say_unsandboxed() -> None:
    log.warning(
        "bubblewrap (bwrap) is not available: datums run as plain subprocesses, with /pfs paths "
        "rewritten to their real directories and no isolation (install bubblewrap for a sandbox)."
    )


def base_env() -> dict[str, str]:
    """What a local step inherits from dpl's environment: how to find programs, and the locale."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = "/tmp"
    return env


class LocalExecutor:
    kind = "local"

    def __init__(self, config: dict | None = None):
        self._slots: dict[str, dict[int, Sandbox | Subprocess]] = {}
        self._lock = threading.Lock()

    def start(self, ctx: JobContext) -> dict:
        ctx.scratch.mkdir(parents=True, exist_ok=True)
        (ctx.scratch / "cache").mkdir(exist_ok=True)
        self._slots[ctx.job] = {}
        if bwrap_path() is None:
            if ctx.secret_files:
                where = ", ".join(sorted(ctx.secret_files))
                raise ExecutorUnavailable(
                    f"Pipeline {ctx.pipeline!r} mounts secret files ({where}), which needs the bwrap sandbox, and it is not available here.",
                    hint="Install bubblewrap (Debian: apt install bubblewrap), or pass the secret as an env_var.",
                )
            _say_unsandboxed()
        return {"kind": "local", "sandbox": "bwrap" if bwrap_path() else "subprocess"}

    def slots(self, ctx: JobContext) -> int:
        return ctx.spec.parallelism

    def cancel(self, ctx: JobContext) -> None:
        # A step's wait blocks until it ends, so only killing its box ends it now; no box
        # is made after this (`_slot`), and what `stop` would release is gone already.
        self.stop(ctx)

    def stop(self, ctx: JobContext) -> None:
        ctx.cancelled.set()
        with self._lock:
            boxes = list(self._slots.pop(ctx.job, {}).values())
        for box in boxes:
            box.close()

    def run_datum(self, ctx: JobContext, task: DatumTask) -> DatumResult:
        box = self._slot(ctx)
        if box is None:
            return failed(task, "cancelled")
        return run_step(ctx, task, box, cache_dir=str(ctx.scratch / "cache"))

    def _slot(self, ctx: JobContext) -> Sandbox | Subprocess | None:
        """This thread's box for the job, started on first use or after one died;
        None once the job is stopped (`stop` sets `cancelled` before it takes the
        lock, so no box is made after it closed them all)."""
        with self._lock:
            if ctx.cancelled.is_set():
                return None
            slots = self._slots.setdefault(ctx.job, {})
            key = threading.get_ident()
            box = slots.get(key)
            if box is not None and box.alive:
                return box
            if box is not None:
                box.close()
            where = ctx.scratch / f"slot-{len(slots)}-{os.urandom(3).hex()}"
            names = [p.name for p in ctx.spec.pfs_inputs()]
            bwrap = bwrap_path()
            box = Sandbox(ctx, bwrap, where, names, base_env()) if bwrap else Subprocess(ctx, where, names, base_env())
            slots[key] = box
            return box


class Subprocess:
    """A `runner.Box` without isolation: the step is a child process that sees host paths."""

    maps_pfs = True
    alive = True

    def __init__(self, ctx: JobContext, slot: Path, inputs: list[str], inherit: dict[str, str]):
        self.ctx = ctx
        self.slot = slot
        self.pfs = slot / "pfs"
        self.out = self.pfs / "out"
        self.inherit = inherit
        self.proc: subprocess.Popen | None = None
        for d in [self.out] + [self.pfs / name for name in inputs]:
            d.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        for d in self.pfs.iterdir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def run(self, step: Step) -> Ran:
        cwd = step_cwd(self.ctx)
        stdin, out, err = self.slot / "stdin", self.slot / "stdout", self.slot / "stderr"
        stdin.write_bytes(step.stdin)
        with open(stdin, "rb") as fin, open(out, "wb") as fout, open(err, "wb") as ferr:
            try:
                self.proc = subprocess.Popen(step.argv, stdin=fin, stdout=fout, stderr=ferr, env=step.env,
                                             cwd=cwd if os.path.isdir(cwd) else "/", start_new_session=True)
            except (FileNotFoundError, PermissionError) as e:
                return Ran(None, f"cannot run {step.argv[0]!r}: {e.strerror}")
            if self.ctx.cancelled.is_set():  # stop() may have looked for it just before it existed
                self.kill()
            code = self.proc.wait()
        return Ran(code, None, tail(out), tail(err))

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
