"""`dpl verify`: re-run the datums of an output commit and compare (engine/verify.py does the work)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import render
from .render import Output


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        target: str = typer.Argument(..., metavar="REPO@COMMIT"),
        sample: Optional[int] = typer.Option(None, "--sample", "-n", min=1, help="Re-run only N datums, chosen at random."),
        executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Re-run on this executor (default: the job's)."),
        output: Output = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs."),
    ):
        """Re-run the datums that made an output commit in a scratch area and compare every output file's hash:
        each datum is reproducible or not, with the differing files (and a diff where they are text).
        The result is kept with the commit.  Exit code 1 when a datum is not reproducible."""
        from ..engine import refs
        from ..engine.verify import as_dict, summary, verify as run
        from .debug import embedded_store

        ref = refs.parse(target, path_allowed=False)
        v = run(embedded_store("verify"), ref.repo, ref.ref_or_default, sample=sample, executor=executor)
        d = as_dict(v)
        if output == Output.json:
            render.emit_json(d)
        else:
            for e in d["datums"]:
                verdict = "reproducible" if e["reproducible"] else "NOT reproducible" + (f" ({e['error']})" if e["error"] else "")
                sys.stdout.write(f"{e['datum'][:12]}  {e['key']}  {verdict}\n")
                for f in e["files"]:
                    sys.stdout.write(f"    {f['path']}: {f['change']}\n")
                    if f["diff"]:
                        sys.stdout.write("".join("      " + line for line in f["diff"].splitlines(keepends=True)))
                if e.get("note"):
                    sys.stdout.write(f"    note: {e['note']}\n")
            sys.stdout.write(f"{ref.repo}@{v.commit[:12]}: {summary(v)}\n")
        if not v.ok:
            raise typer.Exit(1)
