"""`dpl debug-datum`: a shell where a datum ran, driven by a script on stdin and by `-- CMD`."""

from __future__ import annotations

import json

import pytest

from dpl.engine import Store
from dpl.engine.executors.local import bwrap_path
from dplcli import dpl

STEP = ["sh", "-c", "cat /pfs/data/* | wc -c > /pfs/out/$(ls /pfs/data)"]


def setup_store(tmp_path, spec_extra=None, image=None):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.put_bytes("data", "master", {"/a.txt": b"alpha\n", "/b.txt": b"beta\n"})
    s.create_secret("creds", {"token": "s3cr3t-value"})
    spec = {"pipeline": {"name": "size"}, "transform": {"cmd": STEP, "env": {"MODE": "fast"}, **({"image": image} if image else {}),
                                                        "secrets": [{"name": "creds", "key": "token", "env_var": "TOKEN"}]},
            "input": {"pfs": {"repo": "data", "glob": "/*"}}, **(spec_extra or {})}
    path = tmp_path / "size.json"
    path.write_text(json.dumps(spec))
    s.create_pipeline(path.read_text(), source=str(path))
    ran = s.run_jobs()
    assert ran[0]["state"] == "success", ran[0]["error"]
    job = s.list_jobs("size")[0]
    datum = next(d for d in s.list_datums("size", job["id"]) if d["key"] == "data:/a.txt")
    head = s.resolve_commit("size", "master").id
    s.close()
    return tmp_path / "store", job["id"], datum["datum"], head


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not available")
def test_a_scripted_shell_sees_the_datum_and_writes_nowhere(tmp_path):
    store, job, datum, head = setup_store(tmp_path)
    script = "ls /pfs/data\ncat /pfs/data/a.txt\necho \"mode=$MODE token=$TOKEN id=$PACH_DATUM_ID\"\n" \
             "ls /pfs/out | wc -l\necho junk > /pfs/out/a.txt\ntouch /pfs/data/x 2>/dev/null || echo read-only\nls ~ /root 2>&1 | head -1\n"
    proc = dpl("debug-datum", f"size@{job}", datum[:10], store=store, input=script)
    out = proc.stdout.decode()
    assert out.splitlines()[:4] == ["a.txt", "alpha", f"mode=fast token=s3cr3t-value id={datum}", "0"]
    assert "read-only" in out
    err = proc.stderr.decode()
    assert "the step runs: sh -c 'cat /pfs/data/* | wc -c > /pfs/out/$(ls /pfs/data)'" in err and "/pfs/data: 1 file(s)" in err
    s = Store.open(store)
    assert s.resolve_commit("size", "master").id == head  # the scratch /pfs/out reached no commit
    assert s.read_file("size", "master", "/a.txt") == b"6\n"
    assert not list((store / "tmp" / "debug").iterdir())
    s.close()


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not available")
def test_one_command_and_its_exit_code(tmp_path):
    store, job, datum, _ = setup_store(tmp_path)
    proc = dpl("debug-datum", f"size@{job}", datum[:10], "--", "sh", "-c", "cat /pfs/data/a.txt; exit 3", store=store, check=False)
    assert proc.returncode == 3 and proc.stdout == b"alpha\n"
    missing = dpl("debug-datum", f"size@{job}", "ffffffff", "--", "true", store=store, check=False)
    assert missing.returncode != 0 and b"has no datum 'ffffffff'" in missing.stderr and b"Traceback" not in missing.stderr


def test_without_bwrap_the_paths_are_rewritten(tmp_path):
    store, job, datum, _ = setup_store(tmp_path)
    proc = dpl("debug-datum", f"size@{job}", datum[:10], "--", "sh", "-c", "cat /pfs/data/a.txt; echo $data",
               store=store, env={"DPL_SANDBOX": "none"})
    text, where = proc.stdout.decode().splitlines()
    assert text == "alpha" and where.endswith("/pfs/data/a.txt") and where.startswith(str(store))
    assert b"as a plain subprocess (no bwrap)" in proc.stderr


def test_docker_datum_runs_in_its_image(tmp_path, docker_engine):
    store, job, datum, head = setup_store(tmp_path, {"dpl": {"executor": "docker"}}, image=docker_engine.images["busybox"])
    proc = dpl("debug-datum", f"size@{job}", datum[:10], store=store,
               input="cat /pfs/data/a.txt\necho \"$MODE $TOKEN\"\necho x > /pfs/out/y && echo wrote\n")
    lines = proc.stdout.decode().splitlines()
    assert "in a container of dpl-test/busybox" in proc.stderr.decode()
    assert lines[:2] == ["alpha", "fast s3cr3t-value"] and "wrote" in lines
    s = Store.open(store)
    assert s.resolve_commit("size", "master").id == head
    s.close()
