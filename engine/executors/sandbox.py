"""The bubblewrap sandbox: what a local step sees, and a server that runs datums in it.

What a step sees (`mount_plan`) is a list, not the host minus exceptions:
the system directories programs need (`/usr`, `/bin`, `/lib*`, `/etc` less
its secrets), the interpreter dpl runs with (its venv and base prefix: the
demo's steps run `python3` with scikit-learn from there), the step's code
directory, `/pfs`, a private `/tmp` and `/run`, and the secret files its
spec names.  Nothing else is mounted, so the store, home directories and
every other secret are simply not there; where the store lies beneath
something that is shown (a store inside the code directory, say) a tmpfs
covers it.  Host directories a step needs beyond these can be listed in
the store's config.json as `sandbox_paths`.

Setting up namespaces and mounts costs bwrap several milliseconds, more than
a trivial step itself, so each worker slot of a job keeps one sandbox (as
Pachyderm keeps one worker container) and runs its datums in it:

- the slot's host directories `pfs/<input>` (read-only) and `pfs/out` are
  bind-mounted once; between datums the host replaces their *contents*,
  which the mounts show at once;
- inside, a tiny server (the host's Python, no site packages) reads one JSON
  request per datum from a pipe, forks the step in a new session with the
  datum's environment, waits, kills whatever the step left running, and
  answers with the exit code;
- a datum that times out takes the sandbox down with it (killing the process
  group is the only way to be sure nothing survives), and the next datum
  gets a fresh one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from .base import JobContext
from ..code import code_files
from .runner import Ran, Step, tail

IO = "/run/dpl-io"  # where the step's stdin/stdout/stderr files live inside (a host dir bound there)
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# Never shown whole as a step's code directory (only its code files are): they would show the host,
# its homes or its other stores.
NOT_CODE = {"/", "/tmp", "/run", "/proc", "/dev", "/sys", "/home", "/root", "/var", "/mnt", "/media", "/srv", "/opt"}
# Secrets of the host's /etc (globs): covered even though /etc is shown.
ETC_SECRETS = (
    "shadow", "shadow-", "gshadow", "gshadow-", "sudoers", "sudoers.d", "security/opasswd", "krb5.keytab",
    "ssl/private", "pki/tls/private", "ssh/ssh_host_*_key", "NetworkManager/system-connections", "wireguard",
    "letsencrypt", "docker/key.json",
)

SERVER = r"""
import json, os, sys
def main():
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                for fd, path, flags in ((0, req["stdin"], os.O_RDONLY), (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                        (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                    f = os.open(path, flags, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                os.chdir(req["cwd"])
                os.execvpe(req["cmd"][0], req["cmd"], req["env"])
            except OSError as e:
                os.write(2, ("cannot run %r: %s\n" % (req["cmd"][0], e.strerror)).encode())
            os._exit(127)
        _, status = os.waitpid(pid, 0)
        try:
            os.killpg(pid, 9)  # background children the step left behind
        except OSError:
            pass
        sys.stdout.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()
main()
"""


# ------------------------------------------------------------------ what a step sees


def step_cwd(ctx: JobContext) -> str:
    """The step's working directory: `working_dir`, else the spec's directory, else /."""
    working_dir = ctx.spec.transform.get("working_dir")
    if working_dir:
        return working_dir
    return ctx.code_dir if ctx.code_dir and os.path.isdir(ctx.code_dir) else "/"


def interpreter_paths() -> list[str]:
    """dpl's own Python: the sandbox server runs on it, and steps run `python3` from its venv."""
    paths = set()
    for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))):
        if p and os.path.isdir(p):
            paths.add(os.path.realpath(p))
    return sorted(paths)


def hidden_paths(ctx: JobContext) -> list[str]:
    """What must stay invisible wherever it lies: the store and the job's scratch."""
    out = set()
    for p in (ctx.store_root, ctx.scratch):
        if p is not None:
            out.add(os.path.realpath(p))
    return sorted(out)


def mount_plan(bwrap: str, ctx: JobContext) -> tuple[list[str], list[str], list[str]]:
    """(bwrap arguments up to /pfs, directories to make read-only once the secret
    mount points are made in them, arguments that hide what must stay hidden).

    The order is bwrap's order: each mount lands on top of the ones before."""
    args = [bwrap, "--die-with-parent", "--unshare-all", "--hostname", "dpl"]
    if ctx.spec.network:
        args.append("--share-net")
    shown: list[str] = []  # host directories the step sees (read-only)

    def show(path: str) -> None:
        real = os.path.realpath(path)
        if not os.path.exists(real) or _under(real, shown) or real in ("/tmp", "/run"):
            return
        args.extend(["--ro-bind", real, real])
        shown.append(real)

    for entry in SYSTEM:
        host = "/" + entry
        if os.path.islink(host):
            args.extend(["--symlink", os.readlink(host), host])
        elif os.path.isdir(host):
            args.extend(["--ro-bind", host, host])
            shown.append(host)
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    for path in interpreter_paths():
        show(path)
    for path in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # steps inherit it (local.base_env)
        real = os.path.realpath(path) if os.path.isabs(path) else ""
        if real and real not in NOT_CODE and os.path.dirname(real) != "/home":
            show(real)
    cwd = os.path.realpath(step_cwd(ctx))
    if os.path.isdir(cwd) and not _under(cwd, ["/pfs"]):
        if cwd in NOT_CODE or os.path.dirname(cwd) == "/home":
            # A spec kept in a home directory (or /): show its code files, not the whole directory.
            args.extend(["--dir", cwd])  # the step starts there, even with nothing of it shown
            root, files = code_files(ctx.spec, ctx.code_dir, "local")
            for rel in files:
                show(os.path.join(root, rel))
        else:
            show(cwd)
    for path in ctx.config.get("sandbox_paths", []):
        if os.path.isabs(path) and os.path.realpath(path) not in NOT_CODE:
            show(path)

    shadowed = _shadowed_dirs(list(ctx.secret_files), shown)
    args += _shadow_args(shadowed)

    hide: list[str] = []
    covered: list[str] = []
    for path in hidden_paths(ctx):  # sorted: a store comes before its own scratch, which it covers
        if os.path.isdir(path) and _under(path, shown) and not _under(path, covered):
            hide += ["--tmpfs", path]
            covered.append(path)
    for pattern in ETC_SECRETS:
        for path in sorted(glob.glob(os.path.join("/etc", pattern))):
            if os.path.islink(path):
                continue  # where it points is hidden or shown on its own account
            hide += ["--tmpfs", path] if os.path.isdir(path) else ["--ro-bind", "/dev/null", path]
    return args, shadowed, hide


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _shadowed_dirs(mount_paths: list[str], shown: list[str]) -> list[str]:
    """The shown host directories that must make room for these mount points.

    bwrap cannot create a mount point inside a read-only bind of a host
    directory (a secret at /etc/creds/key), so the deepest existing directory
    above each such path is rebuilt (`_shadow_args`) and, once the mount
    points are made in it, made read-only again (`Sandbox(read_only=)`).
    A path in nothing shown needs no room: bwrap makes it in its own root."""
    parents = set()
    for path in mount_paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent != "/" and not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if parent != "/" and _under(os.path.realpath(parent), shown):
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


def sandbox_args(ctx: JobContext, bwrap: str, pfs: Path, inputs: list[str], secret_file) -> list[str]:
    """bwrap's arguments for a step's sandbox, up to the program to run: `pfs/<input>`
    read-only and `pfs/out` writable at /pfs, the secret files (`secret_file(bytes)`
    gives a host copy to bind), the rest hidden.  A slot's `Sandbox` and
    `dpl debug-datum` (engine/debug.py) build their sandboxes from this one list."""
    args, read_only, hide = mount_plan(bwrap, ctx)
    args += ["--dir", "/pfs"]
    for name in inputs:
        args += ["--ro-bind", str(pfs / name), f"/pfs/{name}"]
    args += ["--bind", str(pfs / "out"), "/pfs/out"]
    for mount_path, data in ctx.secret_files.items():
        args += ["--ro-bind", str(secret_file(data)), mount_path]
    for directory in read_only:  # writable only while the binds above made their mount points
        args += ["--remount-ro", directory]
    return args + hide


# -------------------------------------------------------------------- the server


class Sandbox:
    """One slot's sandbox: a `runner.Box` that runs its datums one at a time."""

    maps_pfs = False

    def __init__(self, ctx: JobContext, bwrap: str, slot: Path, inputs: list[str], inherit: dict[str, str]):
        self.ctx = ctx
        self.slot = slot
        self.pfs = slot / "pfs"
        self.out = self.pfs / "out"
        self.io = slot / "io"
        self.inherit = inherit
        for d in [self.out, self.io] + [self.pfs / name for name in inputs]:
            d.mkdir(parents=True, exist_ok=True)
        args = sandbox_args(ctx, bwrap, self.pfs, inputs, self._secret_file) + ["--bind", str(self.io), IO]
        args += [sys.executable, "-I", "-S", "-c", SERVER]
        self.errors = slot / "sandbox.err"
        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True, text=True, bufsize=1)
        self.lock = threading.Lock()

    def _secret_file(self, data: bytes) -> Path:
        """A host copy of a secret file for bwrap to bind (in the job's scratch, hidden from the step)."""
        folder = self.ctx.scratch / "secrets"
        folder.mkdir(mode=0o700, exist_ok=True)
        host = folder / uuid.uuid4().hex
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return host

    # ------------------------------------------------------------------ Box

    def prepare(self) -> None:
        """Empty the input and output directories, keeping the directories (they are mount points)."""
        for d in self.pfs.iterdir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def run(self, step: Step) -> Ran:
        (self.io / "stdin").write_bytes(step.stdin)
        req = {"cmd": step.argv, "env": step.env, "cwd": step_cwd(self.ctx),
               "stdin": f"{IO}/stdin", "stdout": f"{IO}/stdout", "stderr": f"{IO}/stderr"}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        logs = tail(self.io / "stdout"), tail(self.io / "stderr")
        if not line:
            said = self.why()
            return Ran(None, f"the sandbox could not start: {said}" if said else "the sandbox died", *logs)
        return Ran(int(json.loads(line)["code"]), None, *logs)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def release(self) -> None:
        pass

    # ---------------------------------------------------------------- life

    def why(self) -> str:
        """What bubblewrap said when the sandbox ended, if anything."""
        try:
            text = self.errors.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[-1] if text else ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
