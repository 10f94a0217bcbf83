"""Predicting a job before running it: `dpl list-datum -f spec.json` and `create-pipeline --dry-run`."""

from __future__ import annotations

import hashlib
import json
import os

from dpl.engine import Store
from dpl.engine.predict import predict
from dplcli import dpl

STEP = ["sh", "-c", "cat /pfs/data/* > /pfs/out/$(ls /pfs/data)"]


def spec(cmd=STEP, glob="/*"):
    return {"pipeline": {"name": "copy"}, "transform": {"cmd": cmd}, "input": {"pfs": {"repo": "data", "glob": glob}}}


def snapshot(root) -> dict[str, str]:
    """Every file of the store (metadata database, chunks, spec history) by content."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def by_key(found) -> dict[str, tuple[str, str]]:
    return {d["key"]: (d["action"], d["reason"]) for d in found.datums}


def test_predicts_each_datum_and_why(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.put_bytes("data", "master", {"/a": b"1", "/b": b"2"})
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(spec()))

    new = predict(s, path.read_text(), str(path))
    assert not new.exists
    assert by_key(new) == {"data:/a": ("run", "new input"), "data:/b": ("run", "new input")}

    s.create_pipeline(path.read_text(), source=str(path))
    s.run_jobs()
    s.put_bytes("data", "master", {"/b": b"22", "/c": b"3"})  # no jobs run: the prediction sees the new head
    found = by_key(predict(s, path.read_text(), str(path)))
    assert found["data:/a"] == ("skip", "already done")
    assert found["data:/b"] == ("run", "changed content: data:/b")
    assert found["data:/c"] == ("run", "new input")

    path.write_text(json.dumps(spec(cmd=["sh", "-c", "true"])))
    changed = predict(s, path.read_text(), str(path))
    assert {d["action"] for d in changed.datums} == {"run"}
    assert {d["reason"] for d in changed.datums} == {"spec changed"}
    s.close()


def test_dry_run_changes_nothing(tmp_path):
    store = tmp_path / "store"
    s = Store.init(store)
    s.create_repo("data")
    s.put_bytes("data", "master", {f"/f{i}": str(i).encode() for i in range(5)})
    s.close()
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(spec()))
    before = snapshot(store)
    out = json.loads(dpl("create-pipeline", path, "--dry-run", "-o", "json", store=store).stdout)
    assert (out["total"], out["run"], out["skip"]) == (5, 5, 0)
    listed = json.loads(dpl("list-datum", "-f", path, "-o", "json", store=store).stdout)
    assert sorted(d["key"] for d in listed["datums"]) == [f"data:/f{i}" for i in range(5)]
    table = dpl("list-datum", "-f", path, store=store)
    assert b"new input" in table.stdout and b"nothing was changed" in table.stderr
    assert snapshot(store) == before
    assert json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout) == []


def test_an_edited_script_is_code_changed(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.put_bytes("data", "master", {"/a": b"1"})
    (tmp_path / "step.sh").write_text("cp /pfs/data/* /pfs/out/\n")
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(spec(cmd=["sh", "step.sh"])))
    s.create_pipeline(path.read_text(), source=str(path))
    assert s.run_jobs()[0]["state"] == "success"
    assert by_key(predict(s, path.read_text(), str(path))) == {"data:/a": ("skip", "already done")}
    (tmp_path / "step.sh").write_text("cp /pfs/data/* /pfs/out/ && echo >> /pfs/out/a\n")
    assert by_key(predict(s, path.read_text(), str(path))) == {"data:/a": ("run", "code changed: step.sh")}
    s.close()
