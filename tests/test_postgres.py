"""PostgreSQL metadata: one store shared by several machines over S3 + PostgreSQL.

Each "machine" is its own store directory (its own config, read cache and
working directory), made by `dpl init` with the same `--object-store` and
`--metadata` URLs, and its `dpl` processes are separate processes.  What the
machines share is only what a real deployment shares: the bucket and the
database.  (The suites that run on both metadata backends are parametrised
in conftest; these tests are about what only a shared database can do.)
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import uuid

import pytest

from dpl.engine import Store
from dplcli import dpl, popen

pytestmark = pytest.mark.postgres


@pytest.fixture
def machines(s3_server, postgres_db, tmp_path):
    """Two store directories sharing one bucket prefix and one database."""
    bucket = f"s3://{s3_server.bucket}/pg-{uuid.uuid4().hex[:10]}"
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name / ".dpl"
        dpl("init", root, "--object-store", bucket, "--metadata", postgres_db)
        roots.append(root)
    return roots


WRITER = """
import sys
from dpl.engine import Store
root, w, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = Store.open(root)
for i in range(n):
    s.put_bytes("data", "master", {f"/{w}/{i:03}": f"{w}:{i}".encode()}, description=f"{w}:{i}")
"""


@pytest.mark.s3
def test_two_machines_share_one_store_and_lose_no_commit(machines, postgres_db):
    a, b = machines
    for root in (a, b):
        config = json.loads((root / "config.json").read_text())
        assert config["metadata"] == postgres_db
        assert not (root / "meta.db").exists() and not (root / "chunks").exists()
    dpl("create-repo", "data", store=a)
    assert "data" in dpl("list-repo", store=b).stdout.decode()  # made on a, seen on b

    # Two processes on each machine commit to one branch at the same time.
    writers, commits = [(root, f"{m}{p}") for m, root in zip("ab", machines) for p in range(2)], 15
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), w, str(commits)], stderr=subprocess.PIPE) for root, w in writers]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read().decode()

    histories = [Store.open(root).list_commits("data", "master") for root in machines]
    assert [c.id for c in histories[0]] == [c.id for c in histories[1]]  # one history, seen alike
    history = histories[0]
    assert len(history) == len(writers) * commits  # none lost
    for newer, older in zip(history, history[1:]):
        assert newer.parent == older.id  # one line: every commit built on the one before
    assert [c.nfiles for c in reversed(history)] == list(range(1, len(history) + 1))
    assert sorted(c.description for c in history) == sorted(f"{w}:{i}" for _, w in writers for i in range(commits))
    # Bytes one machine wrote are read by the other, from the bucket.
    assert dpl("get-file", "data@master:/a0/007", store=b).stdout == b"a0:7"
    assert dpl("get-file", "data@master:/b1/014", store=a).stdout == b"b1:14"


@pytest.mark.s3
def test_two_machines_running_jobs_never_run_a_datum_twice(machines, tmp_path, monkeypatch):
    a, b = machines
    log = tmp_path / "ran.log"  # both "machines" are this host: a step can append here, without a sandbox
    data = tmp_path / "data"
    for i in range(6):
        (data / f"d{i}").mkdir(parents=True)
        (data / f"d{i}" / "x").write_text(str(i))
    dpl("create-repo", "data", store=a)
    dpl("put-file", "data@master", data, "-r", store=a)
    monkeypatch.setenv("DPL_SANDBOX", "none")
    for p in range(4):
        spec = {
            "pipeline": {"name": f"p{p}"},
            "input": {"pfs": {"repo": "data", "glob": "/*"}},
            "transform": {"cmd": ["sh", "-c", f"sleep 0.3; echo p{p} $(ls /pfs/data) >> {log}; cp -r /pfs/data/* /pfs/out/"]},
        }
        (tmp_path / f"p{p}.json").write_text(json.dumps(spec))
        dpl("create-pipeline", tmp_path / f"p{p}.json", "--no-wait", store=(a, b)[p % 2])

    runners = [popen("run", store=root) for root in (a, b)]
    for r in runners:
        out, err = r.communicate(timeout=600)
        assert r.returncode == 0, err.decode()

    runs = collections.Counter(line.strip() for line in log.read_text().splitlines())
    assert set(runs) == {f"p{p} d{i}" for p in range(4) for i in range(6)}
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1]
    s = Store.open(b)
    jobs = s.list_jobs()
    assert len(jobs) == 4 and all(j["state"] == "success" for j in jobs)
    owners = {r["owner"].rsplit(":", 1)[0] for r in s.db.all("SELECT owner FROM jobs")}  # host:pid of the runner
    assert len(owners) == 2, "both machines' runners claimed jobs"
    for job in jobs:
        datums = s.list_datums(job["pipeline"], job["id"])
        assert len(datums) == 6 and all(d["state"] == "success" for d in datums)
    # Every output is in the shared store, whichever machine ran its datum.
    a_view = Store.open(a)
    for p in range(4):
        assert {a_view.read_file(f"p{p}", "master", f"/d{i}/x") for i in range(6)} == {str(i).encode() for i in range(6)}


def test_an_unreachable_database_or_a_wrong_password_fails_at_init(postgres_server, tmp_path):
    url = postgres_server.create_database()
    wrong_password = url.replace(postgres_server.password, "not-the-password")
    down = f"postgresql://dpl:secret@127.0.0.1:1/{url.rsplit('/', 1)[1]}"
    for bad, needle in ((wrong_password, "password"), (down, "could not be reached"), ("mysql://x@y/z", "not a PostgreSQL URL")):
        root = tmp_path / uuid.uuid4().hex / ".dpl"
        proc = dpl("init", root, "--metadata", bad, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err
        assert needle in err and err.startswith("error: "), err
        assert "not-the-password" not in err and "secret" not in err  # passwords never reach the terminal
        assert not (root / "config.json").exists()  # no half-made store to find later
    postgres_server.drop_database(url)


def test_a_database_that_goes_away_is_one_sentence_and_loses_nothing(postgres_server, postgres_db, tmp_path):
    root = tmp_path / ".dpl"
    dpl("init", root, "--metadata", postgres_db)
    dpl("create-repo", "data", store=root)
    (tmp_path / "f").write_text("kept")
    dpl("put-file", "data@master:/kept", tmp_path / "f", store=root)
    s = Store.open(root)  # a long-lived process (dpl run --watch): its connection outlives the server
    assert s.list_files("data", "master", "/")["path"].to_pylist() == ["/kept"]

    postgres_server.halt()
    try:
        proc = dpl("put-file", "data@master:/new", tmp_path / "f", store=root, check=False)
    finally:
        postgres_server.start()
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err
    assert err.startswith("error: The metadata database at postgresql://") and "could not be reached" in err, err
    assert postgres_server.password not in err

    # The restarted server has what was committed: the long-lived process
    # reconnects by itself, and a new process carries on.
    assert s.list_files("data", "master", "/")["path"].to_pylist() == ["/kept"]
    s.put_bytes("data", "master", {"/after": b"restart"})
    assert dpl("get-file", "data@master:/after", store=root).stdout == b"restart"
    fresh = Store.open(root)
    assert fresh.list_files("data", "master", "/")["path"].to_pylist() == ["/after", "/kept"]


def test_a_pipeline_made_on_one_machine_shows_its_history_on_the_other(machines, tmp_path):
    """specs.git is per machine; the history a user sees comes from the shared metadata."""
    a, b = machines
    dpl("create-repo", "data", store=a)
    spec = {"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "data", "glob": "/*"}}, "transform": {"cmd": ["true"]}}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    dpl("create-pipeline", tmp_path / "p.json", "--no-wait", store=a)
    spec["transform"]["cmd"] = ["echo", "v2"]
    (tmp_path / "p.json").write_text(json.dumps(spec))
    dpl("update-pipeline", tmp_path / "p.json", "--no-wait", store=b)
    for machine in (a, b):
        history = json.loads(dpl("inspect-pipeline", "p", "--history", "-o", "json", store=machine).stdout)["history"]
        assert [v["version"] for v in history] == [1, 2]
        assert '"true"' in history[0]["diff"] and '"v2"' in history[1]["diff"] and '"true"' in history[1]["diff"]
