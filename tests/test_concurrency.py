"""Processes working on one store at once: runners never share a datum, pipelines are never lost."""

from __future__ import annotations

import collections
import json
import os
import time

import pytest

from dpl.engine import Store
from dplcli import dpl, popen

# Each test runs on SQLite and on PostgreSQL metadata (the `metadata` fixture in conftest).
pytestmark = pytest.mark.parametrize("metadata", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


def init(root, metadata):
    dpl("init", root, *(["--metadata", metadata] if metadata else []))


def test_two_runners_never_run_the_same_datum_twice(tmp_path, monkeypatch, metadata):
    root = tmp_path / "store"
    log = tmp_path / "ran.log"
    data = tmp_path / "data"
    for i in range(6):
        (data / f"d{i}").mkdir(parents=True)
        (data / f"d{i}" / "x").write_text(str(i))
    init(root, metadata)
    dpl("create-repo", "data", store=root)
    dpl("put-file", "data@master", data, "-r", store=root)
    # Without a sandbox a step can append to a log outside the store: the
    # ground truth of how many times each datum really ran.
    env = {"DPL_SANDBOX": "none"}
    for p in range(4):
        spec = {
            "pipeline": {"name": f"p{p}"},
            "input": {"pfs": {"repo": "data", "glob": "/*"}},
            "transform": {"cmd": ["sh", "-c", f"sleep 0.2; echo p{p} $(ls /pfs/data) >> {log}; cp -r /pfs/data/* /pfs/out/"]},
        }
        (tmp_path / f"p{p}.json").write_text(json.dumps(spec))
        dpl("create-pipeline", tmp_path / f"p{p}.json", "--no-wait", store=root, env=env)
    monkeypatch.setenv("DPL_SANDBOX", "none")
    runners = [popen("run", store=root) for _ in range(2)]
    for r in runners:
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, err.decode()

    runs = collections.Counter(line.strip() for line in log.read_text().splitlines())
    assert set(runs) == {f"p{p} d{i}" for p in range(4) for i in range(6)}
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1]
    s = Store.open(root)
    jobs = s.list_jobs()
    assert len(jobs) == 4 and all(j["state"] == "success" for j in jobs)
    owners = {r["owner"].rsplit(":", 1)[0] for r in s.db.query("SELECT owner FROM jobs")}
    assert len(owners) == 2, "both runners claimed jobs"
    rows = s.db.query("SELECT pipeline, datum, COUNT(*) AS n FROM datums GROUP BY pipeline, datum")
    assert len(rows) == 24 and all(r["n"] == 1 for r in rows)


def test_pipelines_created_at_once_are_all_kept_with_their_spec_history(tmp_path, metadata):
    root = tmp_path / "store"
    init(root, metadata)
    dpl("create-repo", "data", store=root)
    procs = []
    for p in range(6):
        spec = {"pipeline": {"name": f"p{p}"}, "input": {"pfs": {"repo": "data", "glob": "/"}}, "transform": {"cmd": ["true"]}}
        (tmp_path / f"p{p}.json").write_text(json.dumps(spec))
        procs.append(popen("create-pipeline", tmp_path / f"p{p}.json", "--no-wait", store=root))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    s = Store.open(root)
    assert [p["name"] for p in s.list_pipelines()] == [f"p{p}" for p in range(6)]
    for p in range(6):
        assert "p" in s.inspect_pipeline(f"p{p}", history=True)["history"][0]["diff"]


def test_a_spec_history_write_killed_midway_does_not_block_later_pipelines(tmp_path, metadata):
    root = tmp_path / "store"
    init(root, metadata)
    dpl("create-repo", "data", store=root)
    spec = {"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "data", "glob": "/"}}, "transform": {"cmd": ["true"]}}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    dpl("create-pipeline", tmp_path / "p.json", "--no-wait", store=root)
    # What git leaves when a process dies while it moves a ref.
    (root / "specs.git" / "refs" / "heads" / "master.lock").write_text("")
    (tmp_path / "q.json").write_text(json.dumps({**spec, "pipeline": {"name": "q"}}))
    dpl("create-pipeline", tmp_path / "q.json", "--no-wait", store=root)
    assert [p["name"] for p in Store.open(root).list_pipelines()] == ["p", "q"]


def test_a_spec_history_killed_while_git_created_it_is_finished_by_the_next_pipeline(tmp_path, metadata):
    """Found by the crash harness: the first create-pipeline of a store, killed
    inside git's init, left specs.git without HEAD but with HEAD.lock."""
    s = Store.init(tmp_path / "store", metadata=metadata)
    s.create_repo("data")
    half = s.root / "specs.git"
    (half / "refs" / "heads").mkdir(parents=True)
    (half / "HEAD.lock").write_text("")
    spec = {"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "data", "glob": "/"}}, "transform": {"cmd": ["true"]}}
    s.create_pipeline(json.dumps(spec))
    assert s.inspect_pipeline("p", history=True)["history"][0]["version"] == 1


def test_a_live_runner_whose_heartbeat_is_late_keeps_its_job(tmp_path, metadata):
    """Under load a heartbeat can be late; on one machine the owner's pid is the
    truth, so a second runner must not take the job over (and run its datums
    again), while a dead owner's job is taken over at once."""
    import socket

    s = Store.init(tmp_path / "store", metadata=metadata)
    s.create_repo("data")
    spec = {"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "data", "glob": "/"}}, "transform": {"cmd": ["true"]}}
    s.create_pipeline(json.dumps(spec))
    late = f"{socket.gethostname()}:{os.getpid()}:feedbeef"
    with s.db.write() as db:
        db.execute("UPDATE jobs SET state='running', owner=?, heartbeat=heartbeat", (late,))
        db.execute("UPDATE jobs SET heartbeat=?", (time.time() - 120,))
    assert s.run_jobs(wait=False) == []
    with s.db.write() as db:
        db.execute("UPDATE jobs SET owner=?", (f"{socket.gethostname()}:999999:deadbeef",))
    [job] = s.run_jobs(wait=False)
    assert job["state"] == "success"
