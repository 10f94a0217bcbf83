"""`dpl debug-datum`: a shell where one datum ran (engine/debug.py does the work)."""

from __future__ import annotations

from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("debug-datum")
    def debug_datum(
        job: str = typer.Argument(..., metavar="PIPELINE@JOB"),
        datum: str = typer.Argument(..., metavar="DATUM", help="The datum id, or a unique prefix of it."),
        cmd: Optional[List[str]] = typer.Argument(None, metavar="[-- CMD...]", help="Run this one command instead of a shell."),
        executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Debug on this executor (default: the one the job ran on)."),
    ):
        """Open a shell in the sandbox or container a datum ran in: same image, env and secrets, its inputs at
        /pfs/<input>, an empty scratch /pfs/out (thrown away), the step's command printed.  `-- CMD` runs one command."""
        from ..engine.debug import debug_datum as run
        from .main import store
        from .pipelines import job_ref

        pipeline, jid = job_ref(job)
        raise typer.Exit(run(store(), pipeline, jid, datum, cmd or None, executor=executor))
