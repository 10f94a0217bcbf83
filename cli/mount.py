"""`dpl mount`, `dpl unmount`: a commit as a directory (client/mount.py does the work)."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from . import render
from ..storage.errors import DplError


def register(app: typer.Typer) -> None:
    @app.command("mount")
    def mount(
        target: str = typer.Argument(..., metavar="REPO@REF | DIR", help="What to mount (with --commit: the mounted DIR)."),
        where: Optional[str] = typer.Argument(None, metavar="DIR", help="An empty directory to mount on."),
        write: bool = typer.Option(False, "--write", "-w", help="Make the files writable; the changes land as one commit on the branch at unmount."),
        commit: bool = typer.Option(False, "--commit", help="Land the changes of the --write mount on DIR now, as one commit."),
        daemon: bool = typer.Option(False, "--daemon", "-d", help="Run in the background (unmount with `dpl unmount DIR`)."),
        message: str = typer.Option("", "--message", "-m", help="The description of the commits the mount lands."),
    ):
        """Mount a commit (REPO@REF) on DIR, read-only and pinned; with --write, a branch whose changes land as one commit."""
        from ..client import mountctl

        if commit:
            landed = mountctl.ask_commit(where or target)
            render.info(f"committed {landed}" if landed else "nothing to commit: no file was changed")
            return
        if where is None:
            raise DplError("dpl mount needs a directory to mount on.", hint="Write: dpl mount REPO@REF DIR")
        mountctl.require_fuse()
        mountctl.check_dir(where)
        if daemon:
            # The same command again, in the foreground of a process of its own.
            argv = [sys.executable, "-c", "from dpl.cli import run; run()", *(a for a in sys.argv[1:] if a not in ("--daemon", "-d"))]
            log = mountctl.control_path(where)[: -len(".sock")] + ".log"
            mountctl.daemon(argv, where, log)
            render.info(f"mounted {target} on {where} in the background (log: {log}); `dpl unmount {where}` unmounts")
            return
        _mount(target, where, write, message)

    @app.command("unmount")
    def unmount(where: str = typer.Argument(..., metavar="DIR")):
        """Unmount DIR (a --write mount lands its changes first); also clears the mount of a killed `dpl mount`."""
        from ..client import mountctl

        landed = mountctl.unmount(where)
        render.info(f"committed {landed}; unmounted {where}" if landed else f"unmounted {where}")


def _mount(target: str, where: str, write: bool, message: str) -> None:
    from ..client import access, config, mountctl
    from ..engine import refs
    from .main import _address, store

    where = os.path.abspath(where)  # libfuse moves the process to / once mounted
    parsed = refs.parse(target, path_allowed=False)
    door = access.Remote(store()) if config.address(_address) else access.Embedded(store())
    repo, ref, branch = parsed.repo, parsed.ref_or_default, None
    if write:
        branch, ref = mountctl.branch_to_write(door, repo, parsed.ref)
    else:
        ref = door.store.resolve_commit(repo, ref).id  # a missing repo or ref is said before anything is mounted

    def ready(ops):
        mode = f"writable: changes land on {repo}@{branch} at unmount" if write else "read-only"
        render.info(f"mounted {repo}@{ops.commit or branch} on {where} ({mode}); Ctrl-C or `dpl unmount {where}` unmounts")

    def landed(commit):
        render.info(f"committed {repo}@{commit.id}" if commit is not None else "nothing to commit: no file was changed")

    mountctl.run(door, repo, ref, where, write=write, branch=branch, ready=ready, landed=landed, description=message or None)
    render.info(f"unmounted {where}")
