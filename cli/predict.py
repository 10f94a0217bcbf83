"""Rendering a prediction (`engine.predict`): `dpl list-datum -f spec.json` and `create-pipeline --dry-run`."""

from __future__ import annotations

import sys

from . import render
from .render import Output

COLUMNS = [("datum", "DATUM", lambda d: d[:12]), ("key", "INPUTS", None), ("action", "WOULD", None), ("reason", "WHY", None)]


def show(store, text: str, source: str, output: Output, executor: str | None = None) -> None:
    """Predict the spec's job and print it: every datum (table or JSON), then a one-line summary on stderr."""
    from ..engine.predict import predict

    found = predict(store, text, source, executor=executor)
    if output == Output.json:
        render.emit_json({**found.summary(), "datums": found.datums})
        return
    render.table(found.datums, COLUMNS, output)
    s = found.summary()
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
    verb = "update" if s["exists"] else "create"
    sys.stderr.write(f"dry run ({verb} {s['pipeline']}): {s['total']} datums, {s['run']} would run, {s['skip']} skipped"
                     f"{': ' + reasons if reasons else ''}; nothing was changed.\n")
