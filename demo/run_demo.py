#!/usr/bin/env python3
"""The dpl demo: an iris classifier as a versioned, incremental pipeline.

    make demo                      # or: .venv/bin/python demo/run_demo.py

Runs on the embedded default (a store in demo/out/.dpl, the local sandbox
executor, no services).  Everything it does, it does with the public `dpl`
command, echoed as it runs; what it says about the jobs it reads from dpl's
own records through the Python API (`Store.list_jobs`, `Store.list_datums`:
the same records `dpl list-job -o json` and `dpl list-datum -o json` print):

1. puts the data: `training` (iris.csv), `attributes` (batches of samples
   1.csv .. 4.csv) and `labels` (the true species of every batch);
2. creates three pipelines from the specs in demo/pipelines/:
   model (trains on training), inference (model crossed with each
   attributes file) and report (inference joined with labels by batch: a
   notebook step, report.ipynb, that also plots each batch's confusion matrix);
3. adds one attributes file: only its inference datum runs;
4. changes the training data: the model and every inference datum rerun,
   and report reruns only the batches whose predictions changed;
5. traces one prediction back to training@...:/iris.csv (`dpl provenance`)
   and writes graphs of the DAG to demo/out/dag.mmd and dag.dot.
6. sweeps the model's depth (`dpl sweep create depths --param depth=1,2,3`,
   the `tuning` pipeline crossing it with training), shows `dpl metrics`,
   adds one depth (one datum runs) and names the best depth with its
   provenance; demo/sweep_demo.py has that step.

Everything it claims goes to demo/out/summary.json, which tests/test_demo.py
checks against the store.  DPL_DEMO_OUT puts demo/out elsewhere.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_data import BATCH, BATCHES as HELD_OUT_BATCHES, FIRST_TRAINING_ROWS, make_data  # noqa: E402

SPECS = HERE / "pipelines"
OUT = Path(os.environ.get("DPL_DEMO_OUT") or HERE / "out").resolve()
STORE = OUT / ".dpl"
DATA = OUT / "data"
PIPELINES = ["model", "inference", "report"]  # DAG order, for narration

PROVENANCE_FILE = "/3.csv"  # the prediction whose provenance we trace
started = time.time()
summary: dict = {"store": str(STORE), "steps": {}}


# ------------------------------------------------------------------ helpers


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n=== {title} " + "=" * max(0, 70 - len(title)) + f" [{time.time() - started:5.1f}s]")


def find_dpl() -> str:
    beside = Path(sys.executable).parent / "dpl"
    found = str(beside) if beside.exists() else shutil.which("dpl")
    if not found:
        sys.exit("error: the `dpl` command is not installed.\nhint: run `make demo`, or `pip install -e '.[demo]'` in a virtualenv.")
    return found


DPL = find_dpl()
ENV = dict(os.environ, DPL_STORE=str(STORE))
# Steps say `python3`; the sandbox gets the PATH dpl was started with, so put
# this Python (with scikit-learn) first.
ENV["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
ENV.pop("PYTHONHOME", None)


def dpl(*args: str, show: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run `dpl ARGS` in demo/out as a user would; echo it and its output when `show`."""
    if show:
        say(f"$ dpl {shlex.join(args)}")
    proc = subprocess.run([DPL, *args], cwd=OUT, env=ENV, capture_output=True, text=True)
    if show:
        for line in (proc.stdout + proc.stderr).rstrip("\n").splitlines():
            say("  " + line)
    if check and proc.returncode != 0:
        if not show:
            say(proc.stderr)
        sys.exit(f"error: `dpl {' '.join(args)}` failed with exit code {proc.returncode}.")
    return proc


_store = None


def records():
    """dpl's Python API on the demo's store: its records, not our guesses.

    Reading through the engine saves a `dpl` process start per question,
    which is most of the demo's time on a busy 2-core machine.
    """
    global _store
    if _store is None:
        from dpl.engine import Store

        _store = Store.open(STORE)
    return _store


def head(repo: str) -> str:
    return records().list_commits(repo, "master", limit=1)[0].id


def job_counts(job: dict) -> dict:
    return {k: job[k] for k in ("id", "state", "reason", "total", "processed", "skipped", "failed", "output_commit")}


def narrate_jobs(jobs: list[dict], expected: list[str] = PIPELINES, reasons: bool = True, quiet: bool = False) -> dict:
    """Say what each job did, from its record, and (with `reasons`) why its datums ran."""
    say_ = (lambda _text: None) if quiet else say
    by_pipeline = {}
    for j in sorted(jobs, key=lambda j: j["created"]):
        by_pipeline[j["pipeline"]] = j  # the newest job of each pipeline
    out = {}
    for name in expected:
        job = by_pipeline.get(name)
        if job is None:
            say_(f"  {name:<10} no job: nothing it reads changed")
            continue
        out[name] = job_counts(job)
        say_(
            f"  {name:<10} job {job['id'][:12]} {job['state']}: {job['total']} datum{'s' if job['total'] != 1 else ''}, "
            f"{job['processed']} processed, {job['skipped']} skipped" + (f", {job['failed']} failed" if job["failed"] else "")
        )
        if not reasons or not job["processed"]:
            continue
        why: dict[str, list[str]] = {}
        for d in records().list_datums(name, job["id"]):
            if d["state"] != "skipped":
                why.setdefault(d.get("reason") or d["state"], []).append(d["key"])
        for reason, keys in why.items():
            shown = "; ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            say_(f"  {'':<10}   {len(keys)} ran because of {reason}  [{shown}]")
        out[name]["ran"] = why
    return out


def wave_jobs(commit_id: str) -> list[dict]:
    return records().list_jobs(wave=commit_id)


def metrics() -> dict:
    return json.loads(records().read_file("model", "master", "/metrics.json"))


# --------------------------------------------------------------------- demo


def main() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("error: the demo trains with scikit-learn, which is not installed.\nhint: run `make demo`, or `pip install -e '.[demo]'`.")

    step("0. A fresh store in demo/out (the embedded default: local chunks, SQLite, sandboxed steps)")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    summary["data"] = make_data(DATA)
    say(f"iris from scikit-learn, written as CSV under {DATA}:")
    say(f"  training-v1/iris.csv: {FIRST_TRAINING_ROWS} labelled flowers; training-v2/iris.csv: {summary['data']['training_rows'][1]}")
    say(f"  attributes/1.csv .. {HELD_OUT_BATCHES - 1}.csv: {BATCH} unlabelled samples each; labels/N.csv: their species")
    dpl("init", str(STORE))

    step("1. Put the data into three repos")
    for repo, text in (("training", "iris flowers with their species"), ("attributes", "samples to classify, one batch per file"),
                       ("labels", "the true species of each batch")):
        dpl("create-repo", repo, "--description", text)
    dpl("put-file", "training@master:/iris.csv", "data/training-v1/iris.csv", "-m", f"first {FIRST_TRAINING_ROWS} labelled flowers")
    dpl("put-file", "attributes@master", "-r", "data/attributes", "-m", f"batches 1-{HELD_OUT_BATCHES - 1}")
    dpl("put-file", "labels@master", "-r", "data/labels", "-m", f"labels of batches 1-{HELD_OUT_BATCHES}")
    dpl("list-repo")
    summary["training_v1"] = head("training")

    step("2. Create the pipelines (each create-pipeline runs the first job and waits)")
    for name in PIPELINES:
        say(f"--- demo/pipelines/{name}.json:")
        for line in (SPECS / f"{name}.json").read_text().strip().splitlines():
            say("    " + line)
        dpl("create-pipeline", os.path.relpath(SPECS / f"{name}.json", OUT))
    say("What dpl recorded:")
    dpl("list-job")
    summary["steps"]["create"] = narrate_jobs(records().list_jobs(), reasons=False, quiet=True)
    m = metrics()
    say(f"model/metrics.json: trained on {m['train_rows']} rows, cross-validated accuracy {m['cv_accuracy']}")

    step(f"3. A new batch of samples arrives: put attributes/{HELD_OUT_BATCHES}.csv")
    dpl("put-file", f"attributes@master:/{HELD_OUT_BATCHES}.csv", f"data/attributes-later/{HELD_OUT_BATCHES}.csv", "-m", f"batch {HELD_OUT_BATCHES}")
    commit = head("attributes")
    say(f"The jobs of commit {commit[:12]} (its global id: dpl list-job {commit[:12]}):")
    jobs = narrate_jobs(wave_jobs(commit))
    summary["steps"]["add_attributes"] = {"commit": commit, "jobs": jobs}
    inf = jobs.get("inference")
    if inf:
        say(f"=> Only {inf['processed']} of {inf['total']} inference datums ran; the other {inf['skipped']} were "
            "carried forward from the previous job, because their inputs' content did not change.")
    dpl("list-datum", f"inference@{commit[:12]}")

    step("4. More training data: put a new training/iris.csv")
    dpl("put-file", "training@master:/iris.csv", "data/training-v2/iris.csv", "-m", f"all {summary['data']['training_rows'][1]} labelled flowers")
    commit = head("training")
    summary["training_v2"] = commit
    say(f"The jobs of commit {commit[:12]}:")
    jobs = narrate_jobs(wave_jobs(commit))
    summary["steps"]["change_training"] = {"commit": commit, "jobs": jobs}
    if "inference" in jobs and "report" in jobs:
        say(f"=> The model changed, so all {jobs['inference']['processed']} of {jobs['inference']['total']} inference datums reran; "
            f"report reran {jobs['report']['processed']} of {jobs['report']['total']}: only the batches whose prediction files "
            "changed (a datum's id hashes its input files' content).")
    dpl("diff-file", "inference@master")
    m = metrics()
    say(f"model/metrics.json now: trained on {m['train_rows']} rows, cross-validated accuracy {m['cv_accuracy']}")
    files = records().list_files("report", "master", "/").to_pylist()  # N.json, N.png, notebooks/N.ipynb
    reports = [json.loads(records().read_file("report", "master", f["path"])) for f in files if f["path"].endswith(".json")]
    correct, total = sum(r["correct"] for r in reports), sum(r["samples"] for r in reports)
    say(f"report: {correct}/{total} held-out samples classified correctly ({correct / total:.1%})")
    for r in reports:
        for m in r["mistakes"]:
            say(f"  batch {r['batch']}: {m['id']} predicted {m['predicted']}, actually {m['actual']}")
    summary["accuracy"] = {"correct": correct, "samples": total}

    step("5. Provenance: where did a prediction come from?")
    trace_provenance()

    step("6. The DAG")
    write_dag()
    dpl("logs", "--job", f"model@{summary['training_v2'][:12]}")

    step("7. A sweep over the model's depth: one model per depth, compared with dpl metrics")
    from sweep_demo import run_sweep

    run_sweep(dpl, records, say, SPECS, OUT, summary)

    summary["elapsed_seconds"] = round(time.time() - started, 1)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    step(f"Done in {summary['elapsed_seconds']}s")
    say(f"Store: {STORE}  (try: DPL_STORE={os.path.relpath(STORE)} dpl list-job)")
    say(f"Summary of every claim above: {os.path.relpath(OUT / 'summary.json')}")


def trace_provenance() -> None:
    target = f"inference@master:{PROVENANCE_FILE}"
    info = {"file": target}
    summary["provenance"] = info
    dpl("provenance", target)
    trace = records().file_provenance("inference", "master", PROVENANCE_FILE)
    info["record"] = trace
    hits = sorted(set(_find_file(trace, "training", "/iris.csv")))
    info["reaches"] = [f"training@{c}:/iris.csv" for c in hits]
    if hits:
        say(f"=> {target} was made from training@{hits[0][:12]}:/iris.csv"
            + (" (the second training commit)" if hits[0] == summary.get("training_v2") else ""))
    graph = dpl("provenance", target, "--graph", "mermaid", show=False).stdout
    (OUT / "provenance.mmd").write_text(graph)
    say(f"Provenance graph (Mermaid): {os.path.relpath(OUT / 'provenance.mmd')}")
    say(f"And forwards: what was derived from the samples of attributes{PROVENANCE_FILE}?")
    dpl("subvenance", f"attributes@master:{PROVENANCE_FILE}")
    dpl("inspect-commit", f"inference@{summary['training_v2'][:12]}")


def _find_file(node, repo: str, path: str):
    """Commits at which `repo:path` appears anywhere in a provenance record."""
    if isinstance(node, dict):
        if node.get("repo") == repo and node.get("path") == path and node.get("commit"):
            yield node["commit"]
        for value in node.values():
            yield from _find_file(value, repo, path)
    elif isinstance(node, list):
        for value in node:
            yield from _find_file(value, repo, path)


def write_dag() -> None:
    """The pipeline graph, from `dpl draw-dag`: Mermaid in dag.mmd, DOT in dag.dot."""
    pipelines = records().list_pipelines()
    names = {p["name"] for p in pipelines}
    repos = sorted({i.split("@")[0] for p in pipelines for i in p["inputs"]} - names)
    summary["dag"] = {"file": str(OUT / "dag.mmd"), "pipelines": sorted(names), "repos": repos}
    (OUT / "dag.mmd").write_text(dpl("draw-dag", "--graph", "mermaid").stdout)
    (OUT / "dag.dot").write_text(dpl("draw-dag", "--graph", "dot", show=False).stdout)
    say(f"Written to {os.path.relpath(OUT / 'dag.mmd')} (Mermaid) and {os.path.relpath(OUT / 'dag.dot')} (DOT).")


if __name__ == "__main__":
    main()
