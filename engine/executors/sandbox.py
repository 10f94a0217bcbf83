"""A bubblewrap sandbox that lives for a whole job and runs one datum at a time.

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

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

IO = "/run/dpl-io"  # where the step's stdin/stdout/stderr files live inside (a host dir bound there)

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


def hidden_host_paths() -> list[str]:
    """Host paths the sandbox needs but its private /tmp and /run would hide:
    dpl's own Python (a virtualenv made under /tmp, say)."""
    out = []
    for path in {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)}:
        if path.startswith(("/tmp/", "/run/")) and os.path.isdir(path):
            out.append(path)
    return sorted(out)


class SandboxDied(Exception):
    """The sandbox ended before answering (killed on a timeout, or crashed)."""


class Sandbox:
    def __init__(self, bwrap_args: list[str], slot: Path, inputs: list[str], *, binds: list[tuple[str, str]] = (),
                 read_only: list[str] = ()):
        self.slot = slot
        self.pfs = slot / "pfs"
        self.io = slot / "io"
        for d in [self.pfs / "out", self.io] + [self.pfs / name for name in inputs]:
            d.mkdir(parents=True, exist_ok=True)
        args = list(bwrap_args) + ["--dir", "/pfs"]
        for name in inputs:
            args += ["--ro-bind", str(self.pfs / name), f"/pfs/{name}"]
        args += ["--bind", str(self.pfs / "out"), "/pfs/out", "--bind", str(self.io), IO]
        for host, inside in binds:
            args += ["--ro-bind", host, inside]
        for directory in read_only:  # writable only while the binds above made their mount points
            args += ["--remount-ro", directory]
        for host in hidden_host_paths():
            args += ["--ro-bind", host, host]
        args += [sys.executable, "-I", "-S", "-c", SERVER]
        self.errors = slot / "sandbox.err"
        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True, text=True, bufsize=1)
        self.lock = threading.Lock()

    def clear(self) -> None:
        """Empty the input and output directories, keeping the directories (they are mount points)."""
        for d in self.pfs.iterdir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def run(self, cmd: list[str], env: dict[str, str], cwd: str) -> int:
        req = {"cmd": cmd, "env": env, "cwd": cwd, "stdin": f"{IO}/stdin", "stdout": f"{IO}/stdout", "stderr": f"{IO}/stderr"}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise SandboxDied(self.why())
        return int(json.loads(line)["code"])

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

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

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
