"""The local executor (the embedded default): one sandbox per datum.

With bubblewrap the step sees exactly Pachyderm's layout: `/pfs/<input>`
read-only, `/pfs/out` writable, the host's system directories read-only, a
private `/tmp`, its own pid namespace and no network (unless the spec's
`dpl.network` asks for it).  Nothing the step does can change a stored
byte: the store is either hidden (under `/tmp`) or mounted read-only.

Without bubblewrap (or with DPL_SANDBOX=none) the step runs as a plain
subprocess; `/pfs/` in its command, stdin and environment is rewritten to
the datum's real directory so that the same specs still work, and the
engine says once that the step is not isolated.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from .base import DatumResult, DatumTask, JobContext
from .sandbox import Sandbox, SandboxDied
from ..workspace import ChunkReader, collect, materialize
from ..errors import ExecutorUnavailable

log = logging.getLogger("dpl")
LOG_LIMIT = 1 << 20  # bytes of stdout/stderr kept per datum (the tail)
_HIDDEN = {"proc", "dev", "sys", "tmp", "pfs", "run", "lost+found"}


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
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = "/tmp"
    return env


class LocalExecutor:
    kind = "local"

    def __init__(self):
        self._running: dict[str, set[subprocess.Popen]] = {}
        self._slots: dict[str, dict[int, Sandbox]] = {}
        self._trash = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpl-cleanup")

    def start(self, ctx: JobContext) -> dict:
        ctx.scratch.mkdir(parents=True, exist_ok=True)
        (ctx.scratch / "cache").mkdir(exist_ok=True)
        self._running[ctx.job] = set()
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

    def stop(self, ctx: JobContext) -> None:
        ctx.cancelled.set()
        for proc in list(self._running.pop(ctx.job, ())):
            _kill(proc)
        for box in self._slots.pop(ctx.job, {}).values():
            box.close()
        self._trash.shutdown(wait=True)
        self._trash = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpl-cleanup")

    def run_datum(self, ctx: JobContext, task: DatumTask) -> DatumResult:
        if bwrap_path():
            return self._run_in_slot(ctx, task)
        result = DatumResult(task.datum, None, started=time.time())
        work = ctx.scratch / f"{task.datum[:16]}-{uuid.uuid4().hex[:8]}"
        pfs, out = work / "pfs", work / "pfs" / "out"
        try:
            out.mkdir(parents=True)
            materialize(_reader(ctx), task, str(pfs), cache_dir=str(ctx.scratch / "cache"))
            self._execute(ctx, task, work, pfs, result)
            if result.ok:
                pfs_map = {f"/pfs/{i.name}": str(pfs / i.name) for i in task.inputs}
                result.outputs = collect(ctx.chunks, str(out), pfs_map=pfs_map)
        finally:
            result.finished = time.time()
            self._trash.submit(shutil.rmtree, work, True)  # off the datum's critical path
        return result

    # ------------------------------------------------- bwrap: one sandbox per slot

    def _slot(self, ctx: JobContext) -> Sandbox:
        """This thread's sandbox for the job, started on first use or after one died."""
        slots = self._slots.setdefault(ctx.job, {})
        key = threading.get_ident()
        box = slots.get(key)
        if box is None or not box.alive:
            if box is not None:
                box.close()
            cwd = self._cwd(ctx)
            binds = [(cwd, cwd)] if os.path.isdir(cwd) and cwd.startswith(("/tmp/", "/run/")) else []
            secrets = ctx.scratch / "secrets"
            for mount_path, data in ctx.secret_files.items():
                secrets.mkdir(exist_ok=True)
                host = secrets / uuid.uuid4().hex
                host.write_bytes(data)
                binds.append((str(host), mount_path))
            names = [p.name for p in ctx.spec.pfs_inputs()]
            shadowed = _shadowed_dirs(list(ctx.secret_files))
            base = self._bwrap_base(bwrap_path(), ctx) + _shadow_args(shadowed)
            box = Sandbox(base, ctx.scratch / f"slot-{len(slots)}-{uuid.uuid4().hex[:6]}", names, binds=binds, read_only=shadowed)
            slots[key] = box
        return box

    def _cwd(self, ctx: JobContext) -> str:
        cwd = ctx.spec.transform.get("working_dir") or ctx.code_dir or "/"
        return cwd if ctx.spec.transform.get("working_dir") or os.path.isdir(cwd) else "/"

    def _run_in_slot(self, ctx: JobContext, task: DatumTask) -> DatumResult:
        result = DatumResult(task.datum, None, started=time.time())
        t = ctx.spec.transform
        box = self._slot(ctx)
        try:
            box.clear()
            materialize(_reader(ctx), task, str(box.pfs), cache_dir=str(ctx.scratch / "cache"))
            stdin = "\n".join(t.get("stdin", []))
            (box.io / "stdin").write_text(stdin + ("\n" if stdin else ""))
            env = {**base_env(), **t.get("env", {}), **ctx.secrets, **task.env}
            reasons: list[str] = []
            timer = _timer(ctx, box.kill, reasons)
            try:
                result.exit_code = box.run(list(t["cmd"]), env, self._cwd(ctx))
            except SandboxDied as died:
                said = str(died)
                result.error = reasons[0] if reasons else "cancelled" if ctx.cancelled.is_set() else (
                    f"the sandbox could not start: {said}" if said else "the sandbox died")
            finally:
                if timer is not None:
                    timer.cancel()
            result.stdout, result.stderr = _tail(box.io / "stdout"), _tail(box.io / "stderr")
            accepted = set(t.get("accept_return_code", [])) | {0}
            if result.error is None and result.exit_code in accepted:
                result.exit_code = 0
            elif result.error is None:
                result.error = f"exited with code {result.exit_code}"
            if result.ok:
                pfs_map = {f"/pfs/{i.name}": str(box.pfs / i.name) for i in task.inputs}
                result.outputs = collect(ctx.chunks, str(box.pfs / "out"), pfs_map=pfs_map)
        finally:
            result.finished = time.time()
        return result

    def _execute(self, ctx: JobContext, task: DatumTask, work, pfs, result: DatumResult) -> None:
        t = ctx.spec.transform
        cmd, stdin = list(t["cmd"]), "\n".join(t.get("stdin", []))
        env = {**base_env(), **t.get("env", {}), **ctx.secrets, **task.env}
        cwd = self._cwd(ctx)
        real = str(pfs) + "/"
        cmd = [c.replace("/pfs/", real) for c in cmd]
        stdin = stdin.replace("/pfs/", real)
        env = {k: v.replace("/pfs/", real) if v.startswith("/pfs/") else v for k, v in env.items()}
        env["PFS"] = str(pfs)
        argv = cmd
        popen_cwd = cwd if os.path.isdir(cwd) else "/"
        stdin_path, out_path, err_path = work / "stdin", work / "stdout", work / "stderr"
        stdin_path.write_text(stdin + ("\n" if stdin else ""))
        with open(stdin_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            try:
                proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=popen_cwd, start_new_session=True)
            except (FileNotFoundError, PermissionError) as e:
                result.error = f"cannot run {cmd[0]!r}: {e.strerror}"
                return
            running = self._running.setdefault(ctx.job, set())
            running.add(proc)
            try:
                result.exit_code, result.error = _wait(proc, ctx)
            finally:
                running.discard(proc)
        result.stdout, result.stderr = _tail(out_path), _tail(err_path)
        accepted = set(t.get("accept_return_code", [])) | {0}
        if result.error is None and result.exit_code in accepted:
            result.exit_code = 0
        elif result.error is None:
            result.error = f"exited with code {result.exit_code}"

    def _bwrap_base(self, bwrap: str, ctx: JobContext) -> list[str]:
        """The sandbox without /pfs: host system read-only, private /tmp and /run, no network."""
        args = [bwrap, "--die-with-parent", "--unshare-all", "--hostname", "dpl"]
        if ctx.spec.network:
            args.append("--share-net")
        for entry in sorted(os.listdir("/")):
            if entry in _HIDDEN:
                continue
            host = "/" + entry
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        return args + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]


def _shadowed_dirs(mount_paths: list[str]) -> list[str]:
    """The host directories that must make room for these mount points.

    bwrap cannot create a mount point inside a read-only bind of a host
    directory (a secret at /etc/creds/key), so the deepest existing directory
    above each such path is rebuilt (`_shadow_args`) and, once the mount
    points are made in it, made read-only again (`Sandbox(read_only=)`)."""
    parents = set()
    for path in mount_paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent != "/" and not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if parent != "/" and parent.split("/")[1] not in _HIDDEN:  # /tmp and /run are the sandbox's own tmpfs
            parents.add(parent)
    return sorted(parents)


def _shadow_args(parents: list[str]) -> list[str]:
    """Each directory as a tmpfs holding read-only binds of its host entries:
    the step sees the same files, and new mount points can be made in it."""
    args: list[str] = []
    for parent in parents:
        args += ["--tmpfs", parent]
        for entry in sorted(os.listdir(parent)):
            host = os.path.join(parent, entry)
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host) or os.path.isfile(host):
                args += ["--ro-bind", host, host]
    return args


def _timer(ctx: JobContext, kill, reasons: list[str]) -> threading.Timer | None:
    """Kill the step (via `kill`) when the datum or the job runs out of time."""
    limits = []
    if ctx.spec.datum_timeout:
        limits.append((ctx.spec.datum_timeout, f"timed out after {ctx.spec.raw.get('datum_timeout')} (datum_timeout)"))
    if ctx.time_left() is not None:
        limits.append((ctx.time_left(), f"killed when the job timed out after {ctx.spec.raw.get('job_timeout')} (job_timeout)"))
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


def _wait(proc: subprocess.Popen, ctx: JobContext) -> tuple[int | None, str | None]:
    """Wait for the step; kill its whole process tree on a timeout.

    The wait blocks in waitpid (a polling wait would add up to its poll
    interval to every datum); a timer does the killing, and `stop()` kills
    whatever still runs when the job is cancelled.
    """
    reasons: list[str] = []
    timer = _timer(ctx, lambda: _kill(proc, wait=False), reasons)
    try:
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if reasons:
        return None, reasons[0]
    if ctx.cancelled.is_set() and code < 0:
        return None, "cancelled"
    return code, None


def _kill(proc: subprocess.Popen, wait: bool = True) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if wait:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _tail(path) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_LIMIT))
            return f.read()
    except FileNotFoundError:
        return b""  # the step never started


def _reader(ctx: JobContext) -> ChunkReader:
    reader = getattr(ctx, "_reader", None)
    if reader is None:
        reader = ChunkReader(ctx.chunks)
        ctx._reader = reader
    return reader
