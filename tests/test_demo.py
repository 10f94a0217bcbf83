"""The demo (`make demo`) runs end to end and what it says is what dpl recorded.

The demo is run once, as `make demo` runs it, into a temporary directory;
each test then checks one of its claims against the store it left, through
the public `dpl` command: never against the demo's own arithmetic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import service_unavailable
from dplcli import dpl

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "run_demo.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        service_unavailable("scikit-learn (the demo's `demo` extra)", "pip install -e '.[demo]'")
    out = tmp_path_factory.mktemp("demo") / "out"
    env = dict(os.environ, DPL_DEMO_OUT=str(out))
    env.pop("DPL_STORE", None)
    proc = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, f"the demo failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    summary = json.loads((out / "summary.json").read_text())
    return {"out": out, "store": out / ".dpl", "stdout": proc.stdout, "summary": summary}


def records(demo, *args):
    return json.loads(dpl(*args, "-o", "json", store=demo["store"]).stdout)


def jobs_of(demo, commit: str) -> dict[str, dict]:
    return {j["pipeline"]: j for j in records(demo, "list-job", commit)}


def ran(demo, pipeline: str, job: str) -> list[str]:
    """Keys of the datums a job processed (not the ones it carried forward)."""
    return sorted(d["key"] for d in records(demo, "list-datum", f"{pipeline}@{job}") if d["state"] != "skipped")


def test_demo_builds_a_three_stage_pipeline_with_a_cross_and_a_join(demo):
    pipelines = {p["name"]: p for p in records(demo, "list-pipeline")}
    assert set(pipelines) == {"model", "inference", "report", "tuning"}  # tuning: the depth sweep
    assert sorted(pipelines["model"]["inputs"]) == ["training@master"]
    assert "cross" in pipelines["inference"]["spec"]["input"]
    assert "join" in pipelines["report"]["spec"]["input"]
    assert {p["state"] for p in pipelines.values()} == {"running"}
    jobs = records(demo, "list-job")
    assert jobs and {j["state"] for j in jobs} == {"success"}
    files = {f["path"] for f in records(demo, "list-file", "model@master")}
    assert files == {"/model.pkl", "/metrics.json"}
    metrics = json.loads(dpl("get-file", "model@master:/metrics.json", store=demo["store"]).stdout)
    assert metrics["train_rows"] == demo["summary"]["data"]["training_rows"][1]
    assert 0.8 <= metrics["cv_accuracy"] <= 1.0  # a model that really learned


def test_adding_one_attributes_file_runs_only_its_inference_datum(demo):
    commit = demo["summary"]["steps"]["add_attributes"]["commit"]
    added = [d["path"] for d in records(demo, "diff-file", f"attributes@{commit}") if d["change"] == "added"]
    assert len(added) == 1
    jobs = jobs_of(demo, commit)
    assert "model" not in jobs  # nothing the model reads changed
    n_files = len(records(demo, "list-file", f"attributes@{commit}"))
    inference = jobs["inference"]
    assert (inference["total"], inference["processed"], inference["skipped"]) == (n_files, 1, n_files - 1)
    assert ran(demo, "inference", commit) == [f"model:/ attributes:{added[0]}"]
    assert jobs["report"]["processed"] == 1
    # What the demo said is what dpl recorded.
    claimed = demo["summary"]["steps"]["add_attributes"]["jobs"]["inference"]
    assert {k: claimed[k] for k in ("processed", "skipped", "total")} == {k: inference[k] for k in ("processed", "skipped", "total")}
    assert f"Only {inference['processed']} of {inference['total']} inference datums ran" in demo["stdout"]


def test_new_training_data_reruns_the_model_and_every_inference_datum(demo):
    commit = demo["summary"]["steps"]["change_training"]["commit"]
    assert records(demo, "list-commit", "training@master", "-n", "1")[0]["id"] == commit
    jobs = jobs_of(demo, commit)
    assert set(jobs) == {"model", "inference", "report"}
    assert (jobs["model"]["processed"], jobs["model"]["skipped"]) == (1, 0)
    n_files = len(records(demo, "list-file", "attributes@master"))
    assert jobs["inference"]["processed"] == jobs["inference"]["total"] == n_files
    # report reruns exactly the batches whose prediction file changed
    changed = sorted(d["path"] for d in records(demo, "diff-file", f"inference@{commit}") if d["change"] != "unchanged")
    assert ran(demo, "report", commit) == sorted(f"inference:{p} labels:{p}" for p in changed)
    assert jobs["report"]["skipped"] == jobs["report"]["total"] - len(changed)
    claimed = demo["summary"]["steps"]["change_training"]["jobs"]
    for name, job in jobs.items():
        assert (claimed[name]["processed"], claimed[name]["skipped"]) == (job["processed"], job["skipped"])


def test_the_prediction_traces_back_to_the_new_training_commit(demo):
    v2 = demo["summary"]["training_v2"]
    prov = demo["summary"]["provenance"]
    assert prov["reaches"] == [f"training@{v2}:/iris.csv"]
    # and dpl itself says so, not only the demo: the prediction, the model
    # files it read, the new training data and the samples, nothing else
    leaves = set(_files(records(demo, "provenance", prov["file"])))
    assert ("training", v2, "/iris.csv") in leaves
    assert {(repo, path) for repo, _, path in leaves} == {
        ("inference", "/3.csv"), ("model", "/model.pkl"), ("model", "/metrics.json"),
        ("training", "/iris.csv"), ("attributes", "/3.csv"),
    }
    assert (demo["out"] / "provenance.mmd").read_text().startswith("flowchart")


def _files(node):
    """(repo, commit, path) of every file version in a provenance record."""
    if isinstance(node, dict):
        if {"repo", "commit", "path"} <= node.keys():
            yield node["repo"], node["commit"], node["path"]
        for value in node.values():
            yield from _files(value)
    elif isinstance(node, list):
        for value in node:
            yield from _files(value)


def test_the_dag_graph_names_every_stage_and_edge(demo):
    text = (demo["out"] / "dag.mmd").read_text()
    assert text.startswith("flowchart")
    edges = {(m.group(1), m.group(2)) for m in re.finditer(r"^\s*(\w+)\b.*-->.*?\b(\w+)\W*$", text, re.M)}
    drawn = demo["summary"]["dag"]["pipelines"]  # the sweep's pipeline comes after the graph is drawn
    expected = {(inp.split("@")[0], p["name"]) for p in records(demo, "list-pipeline") for inp in p["inputs"] if p["name"] in drawn}
    assert expected == {("training", "model"), ("model", "inference"), ("attributes", "inference"),
                        ("inference", "report"), ("labels", "report")}
    assert edges == expected


def test_the_depth_sweep_ran_only_the_new_depth_and_its_metrics_match(demo):
    sweep = demo["summary"]["sweep"]
    assert sweep["added"] == ["/depth=5.json"]
    job = next(j for j in records(demo, "list-job", "tuning") if j["id"] == sweep["job"]["id"])
    assert (job["total"], job["processed"], job["skipped"]) == (4, 1, 3)
    assert ran(demo, "tuning", job["id"]) == ["depths:/depth=5.json training:/"]
    rows = records(demo, "metrics", "tuning@master")
    assert {r["key"]: r["metrics"] for r in rows} == sweep["table"]
    for r in rows:  # the table is what the files say
        assert r["metrics"] == json.loads(dpl("get-file", f"tuning@master:{r['path']}", store=demo["store"]).stdout)
    best = max(rows, key=lambda r: r["metrics"]["cv_accuracy"])
    assert sweep["best"]["key"] == best["key"] and sweep["best"]["params"] == best["params"]
    assert f"best cv_accuracy = {best['metrics']['cv_accuracy']:.4g}: {best['key']}" in demo["stdout"]
