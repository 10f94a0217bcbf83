"""`dpl verify`: re-running an output commit's datums tells a deterministic step from one that writes the time."""

from __future__ import annotations

import json

from dpl.engine import Store
from dpl.engine.verify import verification
from dplcli import dpl

UPPER = ["sh", "-c", "tr a-z A-Z < /pfs/data/$(ls /pfs/data) > /pfs/out/$(ls /pfs/data)"]
# A step that writes the time.  busybox's date has no %N, so a re-run within the
# same second would write the same line: a few random bytes keep every run distinct.
STAMP = ["sh", "-c", "f=$(ls /pfs/data); cp /pfs/data/$f /pfs/out/$f; echo $(date +%s%N) $(head -c6 /dev/urandom | od -An -tx1) >> /pfs/out/$f"]


def make(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.put_bytes("data", "master", {"/a.txt": b"alpha\n", "/b.txt": b"beta\n"})
    for name, cmd in (("upper", UPPER), ("stamp", STAMP)):
        s.create_pipeline(json.dumps({"pipeline": {"name": name}, "transform": {"cmd": cmd},
                                      "input": {"pfs": {"repo": "data", "glob": "/*"}}}))
    assert {j["state"] for j in s.run_jobs()} == {"success"}
    chunks_before = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file() and "chunks" in p.parts)
    s.close()
    return tmp_path / "store", chunks_before


def test_verify_tells_deterministic_from_time_stamped(tmp_path):
    store, chunks_before = make(tmp_path)
    good = dpl("verify", "upper@master", "-o", "json", store=store)
    found = json.loads(good.stdout)
    assert found["ok"] and (found["checked"], found["reproducible"], found["total"]) == (2, 2, 2)
    assert all(d["reproducible"] and not d["files"] for d in found["datums"])

    bad = dpl("verify", "stamp@master", store=store, check=False)
    out = bad.stdout.decode()
    assert bad.returncode == 1
    assert "NOT reproducible: 2 datum(s) differ (all 2 datums re-run)" in out
    assert "/a.txt: different content" in out and "-alpha" not in out and "+alpha" not in out  # only the time line differs
    assert "--- committed/a.txt" in out and "+++ re-run/a.txt" in out

    s = Store.open(store)
    head = s.resolve_commit("stamp", "master").id
    kept = verification(s, "stamp", head)
    assert kept is not None and not kept["ok"] and kept["checked"] == 2
    assert verification(s, "upper", s.resolve_commit("upper", "master").id)["ok"]
    s.close()
    # provenance shows the verdict: the commit's, and the datum that wrote the file
    tree = json.loads(dpl("provenance", "stamp@master:/a.txt", "-o", "json", store=store).stdout)
    assert tree["verification"]["commit"]["ok"] is False
    assert tree["verification"]["datum"]["reproducible"] is False and tree["verification"]["datum"]["datum"] == tree["datum"]["id"]
    shown = dpl("inspect-commit", "stamp@master", store=store).stdout.decode()
    assert "Verified:" in shown and "NOT reproducible: 2 datum(s) differ" in shown
    assert json.loads(dpl("inspect-commit", "upper@master", "-o", "json", store=store).stdout)["verification"]["ok"] is True
    assert "this datum did not reproduce its outputs" in dpl("provenance", "stamp@master:/a.txt", store=store).stdout.decode()
    s = Store.open(store)
    assert s.commit_provenance("upper", s.resolve_commit("upper", "master").id)["verification"]["ok"] is True
    s.close()
    # re-runs hash their outputs in scratch: the chunk store did not grow
    assert sorted(p.name for p in store.rglob("*") if p.is_file() and "chunks" in p.parts) == chunks_before


def test_sample_and_refusals(tmp_path):
    store, _ = make(tmp_path)
    one = json.loads(dpl("verify", "upper@master", "--sample", "1", "-o", "json", store=store).stdout)
    assert (one["checked"], one["total"], one["sample"]) == (1, 2, 1)
    user = dpl("verify", "data@master", store=store, check=False)
    assert user.returncode == 1 and b"was not made by a pipeline job" in user.stderr and b"Traceback" not in user.stderr


def test_verify_on_docker(tmp_path, docker_engine):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.put_bytes("data", "master", {"/a.txt": b"alpha\n"})
    s.create_pipeline(json.dumps({"pipeline": {"name": "stamp"}, "transform": {"cmd": STAMP, "image": docker_engine.images["busybox"]},
                                  "input": {"pfs": {"repo": "data", "glob": "/*"}}, "dpl": {"executor": "docker"}}))
    assert s.run_jobs()[0]["state"] == "success"
    s.close()
    found = json.loads(dpl("verify", "stamp@master", "-o", "json", store=tmp_path / "store", check=False).stdout)
    assert found["executor"] == "docker" and not found["ok"]
    assert [f["path"] for f in found["datums"][0]["files"]] == ["/a.txt"]
