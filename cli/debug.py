"""`dpl debug-datum`: a shell where one datum ran (engine/debug.py does the work)."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..storage.errors import DplError


def embedded_store(command: str):
    """The embedded store: these commands run steps (or plan them) on this machine, next to its chunks."""
    from ..engine import Store
    from .main import store

    s = store()
    if not isinstance(s, Store):
        raise DplError(f"dpl {command} works on a store on this machine, not through a server.",
                       hint="Run it where the store is (unset DPL_ADDRESS or `dpl disconnect`).")
    return s


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
        from .pipelines import job_ref

        pipeline, jid = job_ref(job)
        raise typer.Exit(run(embedded_store("debug-datum"), pipeline, jid, datum, cmd or None, executor=executor))
