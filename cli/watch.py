"""`dpl watch`: mirror a folder into a branch (engine/watch.py does the work)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

import typer

from . import render


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch(
        folder: str = typer.Argument(..., metavar="DIR"),
        target: str = typer.Argument(..., metavar="REPO@BRANCH"),
        settle: float = typer.Option(1.0, "--settle", help="Seconds without a change before a batch is committed."),
        executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run the downstream jobs on this executor."),
        no_jobs: bool = typer.Option(False, "--no-jobs", help="Only commit; `dpl run` picks the jobs up."),
    ):
        """Mirror DIR into REPO@BRANCH: each settled batch of adds, edits, renames and deletes becomes one commit
        (editor temp files and .dpl are ignored) and the downstream jobs run.  On start, what changed while it
        was not running lands first.  Ctrl-C stops it."""
        from ..engine import refs
        from ..engine.watch import Watcher
        from .debug import embedded_store

        ref = refs.parse(target, path_allowed=False)
        branch = ref.ref or "master"
        stop = threading.Event()

        def said(change):
            render.info(f"committed {ref.repo}@{change.commit} ({change.describe()})")
            for job in change.jobs:
                counts = f"{job['processed']} processed, {job['skipped']} skipped, {job['failed']} failed"
                render.info(f"  job {job['pipeline']}@{job['id'][:12]}: {job['state']} ({counts})")
            sys.stdout.flush()

        def failed(error):
            render.info(f"warning: {error.message} (retried with the next batch)")

        def halt(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt  # a second Ctrl-C does not wait for the running commit or job
            stop.set()

        signal.signal(signal.SIGINT, halt)
        signal.signal(signal.SIGTERM, halt)
        watcher = Watcher(embedded_store("watch"), folder, ref.repo, branch, settle=settle, executor=executor, run_jobs=not no_jobs,
                          on_change=said, on_error=failed)
        watcher.watch(stop, ready=lambda: render.info(f"watching {watcher.folder} -> {ref.repo}@{branch} (Ctrl-C stops)"))
        render.info("stopped")
