"""`dpl metrics`: the metrics files datums wrote, as a table per params combination or commit (engine/metrics.py reads them)."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from . import render
from .render import Output
from ..storage.errors import DplError

BAR = 40  # characters of the longest bar of a terminal chart


def register(app: typer.Typer) -> None:
    @app.command("metrics")
    def metrics(
        target: str = typer.Argument(..., metavar="REPO@REF"),
        vs: Optional[str] = typer.Option(None, "--vs", metavar="[REPO@]REF2", help="Compare with the metrics at REF2: deltas per combination."),
        by: str = typer.Option("params", "--by", help="params: a row per metrics file, keyed by the params combination its datum read (else its path); "
                                                      "commit: a row per commit of the branch, oldest first."),
        limit: int = typer.Option(10, "--limit", "-n", min=1, help="With --by commit: this many commits back."),
        file: Optional[List[str]] = typer.Option(None, "--file", "-f", metavar="PATTERN", help="Which files hold metrics, by name (default metrics*.json and metrics*.csv)."),
        plot: Optional[str] = typer.Option(None, "--plot", metavar="METRIC", help="Chart METRIC: a PNG at -o PATH (matplotlib), else in the terminal."),
        best: Optional[str] = typer.Option(None, "--best", metavar="METRIC", help="Name the datum with the highest METRIC, with its params and input commits."),
        minimize: bool = typer.Option(False, "--min", help="With --best: the lowest wins (a loss)."),
        output: str = typer.Option("table", "--output", "-o", metavar="table|json|PATH", help="table for people, json for programs; with --plot, the PNG file to write."),
    ):
        """Collect the metrics files (JSON or CSV) an output commit's datums wrote and show them per params
        combination (joined through provenance) or per commit; --vs for deltas, --plot for a chart,
        --best for the winning datum."""
        from ..engine import refs
        from ..engine import metrics as m
        from .main import store

        ref = refs.parse(target, path_allowed=False)
        patterns = tuple(file or m.DEFAULT_PATTERNS)
        fmt = output if output in ("table", "json") else None
        if fmt is None and not plot:
            raise DplError(f"-o {output!r} is neither table nor json.", hint="-o PATH is where --plot METRIC writes its PNG.")
        if by not in ("params", "commit"):
            raise DplError(f"--by {by!r} is not params or commit.", hint="Write --by params (the default) or --by commit.")
        if vs and by == "commit":
            raise DplError("--vs compares two commits' tables; --by commit already lists commits.", hint="Leave out one of them.")
        s = store()
        rows = m.history(s, ref.repo, ref.ref_or_default, limit, patterns) if by == "commit" else m.collect(s, ref.repo, ref.ref, patterns)
        rows = m.require_files(rows, ref.repo, ref.ref, patterns)
        if vs:
            other = refs.parse(vs if "@" in vs else f"{ref.repo}@{vs}", path_allowed=False)
            rows = m.compare(rows, m.collect(s, other.repo, other.ref_or_default, patterns))
        if best:
            _best(m.best([r for r in rows if r.get("status") != "gone"], best, minimize=minimize), best, fmt or "table")
            return
        if plot:
            points = m.series(rows, plot, by_commit=by == "commit")
            if fmt is None:
                m.plot_png(points, plot, output, title=f"{plot} of {target}", line=by == "commit")
                render.info(f"wrote a chart of {plot} ({render.count(points, 'value')}) to {output}")
            else:
                _bars(points, plot)
            return
        _table(rows, by == "commit", bool(vs), Output(fmt))


def _table(rows: list[dict], by_commit: bool, deltas: bool, output: Output) -> None:
    from ..engine.metrics import metric_names, param_names

    if output == Output.json:
        render.emit_json(rows)
        return
    params, names = param_names(rows), metric_names(rows + [{"metrics": r.get("baseline") or {}} for r in rows])
    columns = ([("commit", "COMMIT", render.short)] if by_commit else []) + [("key", "PARAMS" if params else "FILE", None)]
    columns += [(f"p:{p}", p.upper(), None) for p in params]
    for name in names:
        columns.append((f"m:{name}", name.upper(), _num))
        if deltas:
            columns.append((f"d:{name}", "Δ", _delta))
    if deltas:
        columns.append(("status", "", lambda s: {"new": "new", "gone": "gone"}.get(s, "")))
    flat = []
    for r in rows:
        row = {"commit": r["commit"], "key": r["key"], "status": r.get("status")}
        row.update({f"p:{k}": v for k, v in (r["params"] or {}).items()})
        row.update({f"m:{k}": v for k, v in (r["metrics"] or r.get("baseline") or {}).items()})
        row.update({f"d:{k}": v for k, v in (r.get("delta") or {}).items()})
        flat.append(row)
    render.table(flat, columns, output)


def _num(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _delta(v) -> str:
    return "" if v is None else "0" if v == 0 else f"{v:+.4g}"


def _best(row: dict, metric: str, output: str) -> None:
    if output == "json":
        render.emit_json({"metric": metric, "value": row["metrics"][metric], **row})
        return
    out = sys.stdout.write
    out(f"best {metric} = {_num(row['metrics'][metric])}: {row['key']}\n")
    if row["datum"]:
        d = row["datum"]
        out(f"  datum   {d['id']}  ({d['pipeline']} job {d['job'][:12]}; {d['key']})\n")
    if row["params_file"]:
        p = row["params_file"]
        out(f"  params  {p['repo']}@{p['commit'][:12]}:{p['path']}  {json.dumps(row['params'])}\n")
    out(f"  file    {row['repo']}@{row['commit'][:12]}:{row['path']}\n")
    for i in row["inputs"]:
        out(f"  input   {i['repo']}@{i['commit'][:12]}:{i['path']}\n")


def _bars(points: list[tuple[str, float]], metric: str) -> None:
    """A horizontal bar chart in plain text (no terminal graphics needed)."""
    width = max(len(label) for label, _ in points)
    low = min(0.0, min(v for _, v in points))
    span = (max(v for _, v in points) - low) or 1.0
    sys.stdout.write(f"{metric}\n")
    for label, v in points:
        n = round((v - low) / span * BAR)
        sys.stdout.write(f"{label:<{width}}  {'█' * n}{' ' * (BAR - n)}  {_num(v)}\n")
