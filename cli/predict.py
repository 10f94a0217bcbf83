"""Rendering a prediction (`engine.predict`): `dpl list-datum -f spec.json` and `create-pipeline --dry-run`."""

from __future__ import annotations

import json
import sys

from . import render
from .render import Output

COLUMNS = [("datum", "DATUM", lambda d: d[:12]), ("key", "INPUTS", None), ("action", "WOULD", None), ("reason", "WHY", None)]
TABLE_ROWS = 1000  # a table is for reading: past this, those that would run come first and the rest is counted


def show(store, text: str, source: str, output: Output, executor: str | None = None) -> None:
    """Predict the spec's job and print it: every datum (table or JSON), then a one-line summary on stderr."""
    from ..engine import Store
    from ..engine.predict import predict
    from ..storage.errors import DplError

    if not isinstance(store, Store):
        raise DplError("A dry run plans from the store on this machine, not through a server.",
                       hint="Run it where the store is (unset DPL_ADDRESS or `dpl disconnect`).")
    found = predict(store, text, source, executor=executor)
    s = found.summary()
    if output == Output.json:
        # One line through the C encoder: render.emit_json's indented, pure-Python path takes
        # seconds on 100,000 datums, more than the prediction itself.
        sys.stdout.write(json.dumps({**s, "datums": found.datums}, ensure_ascii=False) + "\n")
        return
    rows = found.datums
    if len(rows) > TABLE_ROWS:
        rows = sorted(rows, key=lambda d: d["action"] != "run")[:TABLE_ROWS]
    render.table(rows, COLUMNS, output)
    if len(found.datums) > TABLE_ROWS:
        sys.stderr.write(f"(the first {TABLE_ROWS} of {len(found.datums)} datums; -o json lists them all)\n")
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
    verb = "update" if s["exists"] else "create"
    sys.stderr.write(f"dry run ({verb} {s['pipeline']}): {s['total']} datums, {s['run']} would run, {s['skip']} skipped"
                     f"{': ' + reasons if reasons else ''}; nothing was changed.\n")
