"""The demo's sweep step: the iris model's depth, swept, compared, and grown by one value.

Called by run_demo.py (kept in its own file so the demo's other steps stay
readable): `dpl sweep create` writes the `depths` params repo, the `tuning`
pipeline (demo/pipelines/tuning.json) crosses it with the training data, one
model per depth, and `dpl metrics` shows the table, the best depth with its
provenance, and a chart.  Adding one depth then runs one datum.
"""

from __future__ import annotations

import os
from pathlib import Path

FIRST_DEPTHS = "1,2,3"
MORE_DEPTHS = "1,2,3,5"


def run_sweep(dpl, records, say, specs: Path, out: Path, summary: dict) -> None:
    info: dict = {}
    summary["sweep"] = info
    dpl("sweep", "create", "depths", "--param", f"depth={FIRST_DEPTHS}")
    dpl("create-pipeline", os.path.relpath(specs / "tuning.json", out))
    info["first"] = records().resolve_commit("tuning", "master").id

    say(f"One more depth: the grid grows to depth={MORE_DEPTHS}; the other files stay byte-identical.")
    dpl("sweep", "create", "depths", "--param", f"depth={MORE_DEPTHS}")
    params_commit = records().resolve_commit("depths", "master").id
    added = [d["path"] for d in records().diff_files("depths", params_commit).to_pylist() if d["change"] == "added"]
    head = records().resolve_commit("tuning", "master").id
    job = next(j for j in records().list_jobs("tuning") if j["output_commit"] == head)
    info.update(added=added, params_commit=params_commit, head=head,
                job={k: job[k] for k in ("id", "total", "processed", "skipped")})
    say(f"=> tuning ran {job['processed']} of {job['total']} datums (the new depth); {job['skipped']} were carried forward.")

    dpl("metrics", "tuning@master", "--vs", info["first"][:12])
    dpl("metrics", "tuning@master", "--best", "cv_accuracy")
    # the same answers through the Python API, for the summary (what `dpl metrics -o json` prints)
    from dpl.engine import metrics

    rows = metrics.collect(records(), "tuning", "master")
    info["table"] = {r["key"]: r["metrics"] for r in rows}
    best = metrics.best(rows, "cv_accuracy")
    info["best"] = {"key": best["key"], "value": best["metrics"]["cv_accuracy"], "datum": best["datum"]["id"], "params": best["params"]}
    try:
        import matplotlib  # noqa: F401  (the experiments extra)
    except ImportError:
        dpl("metrics", "tuning@master", "--plot", "cv_accuracy")
        return
    dpl("metrics", "tuning@master", "--plot", "cv_accuracy", "-o", "sweep.png")
    info["chart"] = str(out / "sweep.png")
