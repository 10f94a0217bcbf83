"""`dpl debug-datum`: a shell (or one command) where a datum ran, as it ran.

The datum is rebuilt from its job (`replay`); its inputs are laid out as a
step sees them (`workspace.materialize`), the environment is the step's
(`runner.command`: the spec's env, its secrets, PACH_* and the input
paths), and the place is the executor's own: the bubblewrap sandbox built
from the same argument list as a slot's (`sandbox.sandbox_args`), or a
container of the job's image with the job's options
(`DockerExecutor.debug_container`).  `/pfs/out` is a scratch directory
that is deleted afterwards, never collected: nothing written there can
reach a commit.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

from . import replay as replay_mod
from .errors import ExecutorUnavailable
from .executors import runner
from .executors.local import base_env, bwrap_path
from .executors.sandbox import sandbox_args, step_cwd
from .workspace import ChunkReader, materialize

if TYPE_CHECKING:
    from .store import Store


def debug_datum(store: "Store", pipeline: str | None, job: str, datum: str, cmd: list[str] | None = None, *,
                executor: str | None = None, say: Callable[[str], None] | None = None) -> int:
    """Run `cmd` (default: an interactive shell) where datum `datum` of `job` ran; return its exit code."""
    say = say or (lambda line: sys.stderr.write(line + "\n"))
    r = replay_mod.replay(store, pipeline, job)
    task = r.task(r.find(datum))
    kind = replay_mod.executor_kind(store, r, executor)
    ctx = r.context(store, "debug")
    try:
        if kind == "docker":
            return _in_container(store, ctx, task, cmd, say, r.job.executor or {})
        if kind != "local":
            raise ExecutorUnavailable(f"debug-datum runs datums of the local and docker executors, not {kind!r}.",
                                      hint="Pass --executor local to debug it in the local sandbox.")
        return _in_sandbox(store, ctx, task, cmd, say)
    finally:
        replay_mod.done(ctx)


def _announce(say, task, step: runner.Step, where: str) -> None:
    say(f"datum {task.datum[:12]} of {task.pipeline}@{task.job[:12]}, {where}")
    for inp in task.inputs:
        say(f"  /pfs/{inp.name}: {len(inp.files)} file(s) of {inp.repo}@{inp.commit[:12]} ({inp.match})")
    say("  /pfs/out: an empty scratch directory; nothing written there reaches a commit")
    say("  the step runs: " + " ".join(shlex.quote(a) for a in step.argv))
    if step.stdin:
        say("  with stdin:\n" + "\n".join("    " + line for line in step.stdin.decode(errors="replace").splitlines()))


def _shell(cmd: list[str] | None) -> list[str]:
    if cmd:
        return cmd
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    return [shell, "-i"] if replay_mod.is_tty() else [shell]  # a script on stdin runs as is


def _in_sandbox(store, ctx, task, cmd, say) -> int:
    names = [p.name for p in ctx.spec.pfs_inputs()]
    pfs = ctx.scratch / "pfs"
    for d in [pfs / "out"] + [pfs / n for n in names]:
        d.mkdir(parents=True, exist_ok=True)
    materialize(ChunkReader(store.chunks), task, str(pfs))
    bwrap = bwrap_path()
    box = SimpleNamespace(pfs=pfs, out=pfs / "out", inherit=base_env(), maps_pfs=bwrap is None)
    step = runner.command(ctx, task, box)
    env = {**step.env, "PS1": f"dpl-debug {task.datum[:8]}$ "}
    if bwrap is None:
        _announce(say, task, step, f"as a plain subprocess (no bwrap): /pfs is {pfs}")
        cwd = step_cwd(ctx)
        argv = [a.replace(runner.PFS, f"{pfs}/") for a in _shell(cmd)]  # as the step's own command is rewritten
        return subprocess.call(argv, env=env, cwd=cwd if os.path.isdir(cwd) else str(pfs))
    _announce(say, task, step, "in its bubblewrap sandbox")
    secrets = ctx.scratch / "secrets"

    def secret_file(data: bytes):
        secrets.mkdir(mode=0o700, exist_ok=True)
        host = secrets / uuid.uuid4().hex
        host.write_bytes(data)
        return host

    argv = sandbox_args(ctx, bwrap, pfs, names, secret_file) + ["--chdir", step_cwd(ctx), "--", *_shell(cmd)]
    try:
        return subprocess.call(argv, env=env)
    finally:
        _open_up(pfs / "out")


def _in_container(store, ctx, task, cmd, say, ran_on: dict) -> int:
    from docker.errors import DockerException

    from .executors.docker import DockerExecutor

    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise ExecutorUnavailable("debug-datum needs the docker command line to attach to a container.",
                                  hint="Install the docker CLI (Debian: apt install docker.io).")
    executor = DockerExecutor(store.config)
    info = executor.start(ctx)
    try:
        ran = ran_on.get("image_digest")
        if ran and info.get("image_digest") != ran:
            say(f"warning: {info['image']} is now {info.get('image_digest', '?')[:19]}; the job ran {ran[:19]}")
        box = SimpleNamespace(pfs=None, out=None, inherit={}, maps_pfs=False)
        step = runner.command(ctx, task, box)
        try:
            slot, container = executor.debug_container(ctx, step.env)
        except DockerException as e:
            raise ExecutorUnavailable(f"debug-datum could not start a container of {ctx.spec.transform.get('image')!r} ({e}).",
                                      hint="Check the Docker engine (`docker info`).") from None
        materialize(ChunkReader(store.chunks), task, str(slot.pfs))
        _announce(say, task, step, f"in a container of {ctx.spec.transform['image']}")
        tty = ["-t"] if replay_mod.is_tty() else []
        shell = cmd or (["/bin/sh", "-i"] if tty else ["/bin/sh"])
        argv = [docker_cli, "exec", "-i", *tty, "-e", f"PS1=dpl-debug {task.datum[:8]}$ ", container.id, *shell]
        return subprocess.call(argv)
    finally:
        executor.stop(ctx)


def _open_up(out) -> None:
    """What a step made in the scratch /pfs/out may be read-only: let the cleanup remove it."""
    for d, dirs, _ in os.walk(out):
        for name in dirs:
            try:
                os.chmod(os.path.join(d, name), 0o755)
            except OSError:
                pass
