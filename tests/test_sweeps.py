"""Sweeps and metrics: a params repo crossed with the data trains one model per
combination, adding a value runs only the new ones, and `dpl metrics` reads back
what the datums wrote, joined to their params through provenance."""

from __future__ import annotations

import json
import struct

import pytest

from dpl.engine import Store
from dplcli import dpl

# One "model" per datum: a score from the data and the params, written as JSON
# for gini and as CSV for entropy (both formats are metrics files).
TRAIN = r"""
import glob, json, os
pfs = os.environ.get("PFS", "/pfs")
(p,) = glob.glob(pfs + "/params/*.json")
params = json.load(open(p))
total = sum(int(x) for x in open(pfs + "/data/d.txt"))
score = round(total / (1 + params["depth"]) + (0.5 if params["criterion"] == "gini" else 0.0), 6)
out = pfs + "/out/" + os.path.basename(p)[:-5]
os.makedirs(out)
if params["criterion"] == "gini":
    json.dump({"score": score, "loss": round(1 / score, 6), "nested": {"n": total}, "label": "x"}, open(out + "/metrics.json", "w"))
else:
    open(out + "/metrics.csv", "w").write("epoch,score,loss\n0,0.1,9\n1,%s,%s\n" % (score, round(1 / score, 6)))
"""
SPEC = {"pipeline": {"name": "train"}, "transform": {"cmd": ["python3", "-c", TRAIN]},
        "input": {"cross": [{"pfs": {"repo": "params", "glob": "/*"}}, {"pfs": {"repo": "data", "glob": "/"}}]}}


def expected_score(total: int, depth: int, criterion: str) -> float:
    return round(total / (1 + depth) + (0.5 if criterion == "gini" else 0.0), 6)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Three waves: a 2x2 sweep, then depth=8 added, then new data."""
    root = tmp_path_factory.mktemp("sweep") / "store"
    s = Store.init(root)
    s.create_repo("data")
    s.put_bytes("data", "master", {"/d.txt": b"1\n2\n3\n"})
    s.close()
    dpl("sweep", "create", "params", "--param", "depth=2,4", "--param", "criterion=gini,entropy", store=root)
    s = Store.open(root)
    s.create_pipeline(json.dumps(SPEC))
    s.run_jobs()
    first = s.resolve_commit("train", "master").id
    s.close()
    added = json.loads(dpl("sweep", "create", "params", "--param", "depth=2,4,8", "--param", "criterion=gini,entropy",
                           "-o", "json", store=root).stdout)
    s = Store.open(root)
    second = s.resolve_commit("train", "master").id
    s.put_bytes("data", "master", {"/d.txt": b"1\n2\n3\n4\n"})
    s.run_jobs()
    third = s.resolve_commit("train", "master").id
    s.close()
    return {"store": root, "commits": [first, second, third], "added": added}


def metrics(sweep, *args) -> list[dict] | dict:
    return json.loads(dpl("metrics", *args, "-o", "json", store=sweep["store"]).stdout)


def test_adding_one_value_runs_exactly_the_new_combinations(sweep):
    s = Store.open(sweep["store"])
    assert sweep["added"]["added"] == ["/depth=8,criterion=entropy.json", "/depth=8,criterion=gini.json"]
    assert sweep["added"]["combinations"] == 6 and sweep["added"]["removed"] == []
    params_head = sweep["added"]["commit"]
    job = next(j for j in s.list_jobs("train") if j["output_commit"] == sweep["commits"][1])
    assert (job["total"], job["processed"], job["skipped"]) == (6, 2, 4)
    ran = sorted(d["key"] for d in s.list_datums("train", job["id"]) if d["state"] != "skipped")
    assert ran == [f"params:{p} data:/" for p in sweep["added"]["added"]]
    # the old combinations' files are the same bytes, so the same datums
    diff = s.diff_files("params", params_head).to_pylist()
    assert sorted(d["path"] for d in diff if d["change"] != "unchanged") == sweep["added"]["added"]
    assert json.loads(s.read_file("params", params_head, "/depth=8,criterion=gini.json")) == {"criterion": "gini", "depth": 8}
    s.close()


def test_sweep_names_are_stable_and_the_repo_holds_the_grid(tmp_path):
    root = tmp_path / "store"
    Store.init(root).close()
    dpl("sweep", "create", "p", "--param", "lr=0.1,0.01", "--param", "opt=adam", store=root)
    # the flags in another order name the same files: nothing new
    again = json.loads(dpl("sweep", "create", "p", "--param", "opt=adam", "--param", "lr=0.1,0.01", "-o", "json", store=root).stdout)
    assert again["added"] == [] and again["removed"] == []
    smaller = json.loads(dpl("sweep", "create", "p", "--param", "lr=0.1", "--param", "opt=adam", "-o", "json", store=root).stdout)
    assert smaller["removed"] == ["/lr=0.01,opt=adam.json"]
    assert [f["path"] for f in json.loads(dpl("list-file", "p@master", "-o", "json", store=root).stdout)] == ["/lr=0.1,opt=adam.json"]
    bad = dpl("sweep", "create", "p", "--param", "lr", store=root, check=False)
    err = bad.stderr.decode()
    assert bad.returncode == 1 and err.startswith("error: --param 'lr' is not NAME=VALUE") and "Traceback" not in err


def test_metrics_table_matches_the_files(sweep):
    rows = metrics(sweep, "train@master")
    head = sweep["commits"][2]
    assert sorted(r["key"] for r in rows) == sorted(f"depth={d},criterion={c}" for d in (2, 4, 8) for c in ("gini", "entropy"))
    s = Store.open(sweep["store"])  # the files themselves, read through the API (12 `dpl get-file` would take seconds)
    for r in rows:
        assert r["commit"] == head
        text = s.read_file("train", head, r["path"]).decode()
        if r["path"].endswith(".json"):
            doc = json.loads(text)
            assert r["metrics"] == {"score": doc["score"], "loss": doc["loss"], "nested.n": doc["nested"]["n"]}
        else:
            last = text.strip().splitlines()[-1].split(",")
            assert r["metrics"] == {"epoch": 1, "score": float(last[1]), "loss": float(last[2])}
        assert r["params"] == json.loads(s.read_file("params", "master", f"/{r['key']}.json"))
        assert r["metrics"]["score"] == expected_score(10, r["params"]["depth"], r["params"]["criterion"])
    s.close()
    table = dpl("metrics", "train@master", store=sweep["store"]).stdout.decode().splitlines()
    header = table[0].split()
    assert header[:3] == ["PARAMS", "DEPTH", "CRITERION"] and sorted(header[3:]) == ["EPOCH", "LOSS", "NESTED.N", "SCORE"]
    gini8 = next(line.split() for line in table if line.startswith("depth=8,criterion=gini"))
    assert gini8[:3] == ["depth=8,criterion=gini", "8", "gini"] and gini8[3 + header[3:].index("SCORE")] == "1.611"  # 10/9 + 0.5


def test_vs_gives_deltas_per_combination(sweep):
    first, second, third = sweep["commits"]
    rows = {r["key"]: r for r in metrics(sweep, f"train@{third}", "--vs", first)}
    assert {k for k, r in rows.items() if r["status"] == "new"} == {"depth=8,criterion=gini", "depth=8,criterion=entropy"}
    for key, r in rows.items():
        if r["status"] == "both":
            now, before = r["metrics"]["score"], r["baseline"]["score"]
            assert now == expected_score(10, r["params"]["depth"], r["params"]["criterion"])
            assert before == expected_score(6, r["params"]["depth"], r["params"]["criterion"])
            assert r["delta"]["score"] == pytest.approx(now - before) and r["delta"]["score"] > 0
    same = metrics(sweep, f"train@{second}", "--vs", f"train@{first}")
    assert all(r["delta"] == {m: 0 for m in r["metrics"]} for r in same if r["status"] == "both")


def test_best_names_the_winning_datum_and_its_params(sweep):
    s = Store.open(sweep["store"])  # the records to check against, through the API (a `dpl` start costs seconds on a busy CI)
    rows = [{"key": f["path"].split("/")[1], **parse(f["path"], s.read_file("train", "master", f["path"]))}
            for f in s.list_files("train", "master", "/", recursive=True).to_pylist() if f["type"] == "file"]
    top = max(rows, key=lambda r: r["score"])
    best = metrics(sweep, "train@master", "--best", "score")
    assert best["key"] == top["key"] == "depth=2,criterion=gini" and best["value"] == top["score"]
    assert best["params"] == {"depth": 2, "criterion": "gini"}
    # the datum is the one dpl recorded as having written the file, reading that params file
    prov = s.file_provenance("train", "master", best["path"])
    assert best["datum"]["id"] == prov["datum"]["id"] and best["datum"]["key"] == "params:/depth=2,criterion=gini.json data:/"
    assert {(i["repo"], i["commit"]) for i in best["inputs"]} == {
        ("params", s.resolve_commit("params", "master").id), ("data", s.resolve_commit("data", "master").id)}
    s.close()
    worst = metrics(sweep, "train@master", "--best", "loss", "--min")
    assert worst["key"] == min(rows, key=lambda r: r["loss"])["key"] and worst["value"] == min(r["loss"] for r in rows)
    text = dpl("metrics", "train@master", "--best", "score", store=sweep["store"]).stdout.decode()
    assert text.startswith("best score = 3.833: depth=2,criterion=gini")  # 10/3 + 0.5 and best["datum"]["id"] in text
    missing = dpl("metrics", "train@master", "--best", "f1", store=sweep["store"], check=False)
    assert missing.returncode == 1 and missing.stderr.decode().startswith("error: No metrics file has 'f1'.")


def parse(path: str, data: bytes) -> dict:
    """score and loss as the step wrote them (JSON for gini, the CSV's last row for entropy)."""
    if path.endswith(".json"):
        doc = json.loads(data)
        return {"score": doc["score"], "loss": doc["loss"]}
    last = data.decode().strip().splitlines()[-1].split(",")
    return {"score": float(last[1]), "loss": float(last[2])}


def test_plot_writes_a_png_or_draws_in_the_terminal(sweep, tmp_path):
    pytest.importorskip("matplotlib", reason="the experiments extra draws PNG charts")
    chart = tmp_path / "chart.png"
    dpl("metrics", "train@master", "--plot", "score", "-o", chart, store=sweep["store"])
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    bars = dpl("metrics", "train@master", "--plot", "score", store=sweep["store"]).stdout.decode().splitlines()
    assert bars[0] == "score" and len(bars) == 7
    longest = max(bars[1:], key=lambda line: line.count("█"))
    assert longest.startswith("depth=2,criterion=gini") and longest.rstrip().endswith("3.833")
    history = tmp_path / "history.png"
    dpl("metrics", "train@master", "--by", "commit", "--plot", "score", "-o", history, store=sweep["store"])
    assert history.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
