"""`dpl sweep create`: a params repo with one JSON file per combination (engine/sweeps.py does the work)."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import render
from .render import Output

sweep_app = typer.Typer(name="sweep", help="Hyperparameter sweeps: a params repo, one JSON file per combination, crossed with the data by a pipeline.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")


@sweep_app.command("create")
def create(
    target: str = typer.Argument(..., metavar="REPO[@BRANCH]"),
    param: List[str] = typer.Option(..., "--param", "-p", metavar="NAME=V1,V2,...", help="A parameter and its values (repeatable); the grid is every combination."),
    keep: bool = typer.Option(False, "--keep", help="Keep the files of combinations not in this grid (default: the repo holds exactly the grid)."),
    message: str = typer.Option("", "--message", "-m", help="The commit description."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts."),
    executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run those jobs' datums on this executor (local, docker, ray)."),
    output: Output = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs."),
):
    """Write a params repo (created if missing) with one JSON file per combination, e.g. depth=2,criterion=gini.json.
    Files of combinations already there stay byte-identical, so a pipeline crossing the repo with the data
    runs only the new combinations."""
    from ..engine import refs
    from ..engine.sweeps import create_sweep
    from .jobreport import run_and_report
    from .main import store

    ref = refs.parse(target, path_allowed=False)
    s = store()
    result = create_sweep(s, ref.repo, param, branch=ref.ref_or_default, keep=keep, description=message)
    if output == Output.json:
        render.emit_json(result)
    else:
        render.info(f"committed {ref.repo}@{result['commit']}: {render.count(range(result['combinations']), 'combination')}, "
                    f"{len(result['added'])} new" + (f", {len(result['removed'])} removed" if result["removed"] else ""))
        for path in result["added"]:
            render.info(f"  + {path}")
        for path in result["removed"]:
            render.info(f"  - {path}")
    if not no_wait:
        run_and_report(s, result["commit"], executor)
