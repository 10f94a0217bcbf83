"""Pipelines through the real CLI and engine: specs, datums, incremental jobs, the sandbox."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from dpl.engine import Store
from dpl.engine.executors.local import bwrap_path
from dpl.engine.files import plan_sources
from conftest import service_unavailable
from dplcli import dpl, popen
from readback import outputs

# A step that records exactly which input files its datum saw.
LIST_STEP = ["sh", "-c", "find /pfs -type f ! -path '/pfs/out/*' | sort > /pfs/out/$PACH_DATUM_ID"]
UPPER_STEP = ["sh", "-c", "for f in $(find /pfs/data -type f); do tr a-z A-Z < $f > /pfs/out/$(basename $f); done"]


def spec(name, input, cmd=UPPER_STEP, **extra):
    return {"pipeline": {"name": name}, "transform": {"cmd": cmd}, "input": input, **extra}


def pfs(repo, glob="/*", **kw):
    return {"pfs": {"repo": repo, "glob": glob, **kw}}


def write_spec(tmp_path, s) -> str:
    path = tmp_path / f"{s['pipeline']['name']}-{time.time_ns()}.json"
    path.write_text(json.dumps(s))
    return str(path)


def fill(store, repo, files: dict[str, bytes], tmp_path, *, wait=True):
    src = tmp_path / f"src-{repo}-{time.time_ns()}"
    for rel, data in files.items():
        p = src / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    args = ["put-file", f"{repo}@master", src, "-r"] + ([] if wait else ["--no-wait"])
    return dpl(*args, store=store)


def jobs(store, pipeline=None):
    args = ["list-job", "-o", "json"] + (["-p", pipeline] if pipeline else [])
    return json.loads(dpl(*args, store=store).stdout)


def seen_by_datum(store, repo) -> list[list[str]]:
    """What each datum of a LIST_STEP pipeline saw, as sorted file lists."""
    return sorted(sorted(line for line in data.decode().splitlines()) for data in outputs(store, repo).values())


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda s: s["transform"].update(cmnd=["x"]), "spec.transform.cmnd: unknown field"),
        (lambda s: s["transform"].pop("cmd"), "spec.transform.cmd: required field is missing"),
        (lambda s: s.update(parallelism_spec={"constant": "two"}), "spec.parallelism_spec.constant: expected integer"),
        (lambda s: s["input"]["pfs"].update(repo="nosuch"), "input repo 'nosuch' does not exist"),
        (lambda s: s["input"]["pfs"].update(glob="/[abc"), "spec.input.pfs.glob"),
        (lambda s: s.update(datum_timeout="soon"), "spec.datum_timeout"),
        (lambda s: s["input"].update(union=[pfs("data")]), "exactly one of pfs, cross"),
    ],
)
def test_invalid_spec_is_rejected_with_the_json_path_and_nothing_is_created(store, tmp_path, mutate, needle):
    dpl("create-repo", "data", store=store)
    s = spec("p", pfs("data"))
    mutate(s)
    proc = dpl("create-pipeline", write_spec(tmp_path, s), store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and needle in err and "Traceback" not in err, err
    assert json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout) == []
    assert [r["name"] for r in json.loads(dpl("list-repo", "-o", "json", store=store).stdout)] == ["data"]


def test_malformed_json_and_cycles_are_refused(store, tmp_path):
    dpl("create-repo", "data", store=store)
    bad = tmp_path / "bad.json"
    bad.write_text('{"pipeline": {"name": "p"},')
    proc = dpl("create-pipeline", bad, store=store, check=False)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr.decode()
    dpl("create-pipeline", write_spec(tmp_path, spec("a", pfs("data"))), store=store)
    dpl("create-pipeline", write_spec(tmp_path, spec("b", pfs("a"), cmd=["true"])), store=store)
    cyclic = spec("a", {"cross": [pfs("data"), pfs("b")]})
    proc = dpl("update-pipeline", write_spec(tmp_path, cyclic), store=store, check=False)
    assert proc.returncode == 1 and "cycle" in proc.stderr.decode() and "a -> b -> a" in proc.stderr.decode()


def test_a_pachyderm_spec_runs_unchanged_from_stdin(store, tmp_path):
    dpl("create-repo", "images", store=store)
    fill(store, "images", {"/a.txt": b"abc", "/b.txt": b"xyz"}, tmp_path)
    pachyderm_spec = {
        "pipeline": {"name": "edges"},
        "description": "A pipeline that copies images.",
        "transform": {"image": "pachyderm/opencv:1.0", "cmd": ["sh"], "stdin": ["cp /pfs/images/* /pfs/out/"]},
        "parallelism_spec": {"constant": 2},
        "resource_requests": {"cpu": 0.5, "memory": "64Mi"},
        "datum_tries": 2,
        "input": {"pfs": {"repo": "images", "glob": "/*"}},
    }
    dpl("create-pipeline", "-", store=store, input=json.dumps(pachyderm_spec))
    assert outputs(store, "edges") == {"/a.txt": b"abc", "/b.txt": b"xyz"}


# ----------------------------------------------------------------- datums


def test_globs_cut_datums_as_pachyderm_does(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a.csv": b"1", "/b.txt": b"2", "/d/x.csv": b"3", "/d/y/z.csv": b"4"}, tmp_path)
    cases = {
        "/": [["/pfs/data/a.csv", "/pfs/data/b.txt", "/pfs/data/d/x.csv", "/pfs/data/d/y/z.csv"]],
        "/*": [["/pfs/data/a.csv"], ["/pfs/data/b.txt"], ["/pfs/data/d/x.csv", "/pfs/data/d/y/z.csv"]],
        "/*/*": [["/pfs/data/d/x.csv"], ["/pfs/data/d/y/z.csv"]],
        "/*.csv": [["/pfs/data/a.csv"]],
    }
    for i, (glob, expected) in enumerate(cases.items()):
        dpl("create-pipeline", write_spec(tmp_path, spec(f"g{i}", pfs("data", glob), cmd=LIST_STEP)), store=store)
        assert seen_by_datum(store, f"g{i}") == sorted(expected), glob


def test_named_inputs_empty_files_and_branches(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a": b"content"}, tmp_path)
    dpl("create-branch", "data@dev", "--head", "master", store=store)
    step = ["sh", "-c", "for f in $(find /pfs/in -type f); do wc -c < $f > /pfs/out/size; done; echo $in > /pfs/out/var"]
    dpl("create-pipeline", write_spec(tmp_path, spec("e", pfs("data", name="in", branch="dev", empty_files=True), cmd=step)), store=store)
    assert outputs(store, "e") == {"/size": b"0\n", "/var": b"/pfs/in/a\n"}


def test_cross_and_union(store, tmp_path):
    for repo, files in (("a", {"/1": b"x", "/2": b"y"}), ("b", {"/p": b"z", "/q": b"w", "/r": b"v"})):
        dpl("create-repo", repo, store=store)
        fill(store, repo, files, tmp_path)
    dpl("create-pipeline", write_spec(tmp_path, spec("cross", {"cross": [pfs("a"), pfs("b")]}, cmd=LIST_STEP)), store=store)
    assert seen_by_datum(store, "cross") == sorted(sorted([f"/pfs/a/{x}", f"/pfs/b/{y}"]) for x in "12" for y in "pqr")
    dpl("create-pipeline", write_spec(tmp_path, spec("union", {"union": [pfs("a"), pfs("b")]}, cmd=LIST_STEP)), store=store)
    assert seen_by_datum(store, "union") == sorted([["/pfs/a/1"], ["/pfs/a/2"], ["/pfs/b/p"], ["/pfs/b/q"], ["/pfs/b/r"]])


def test_join_on_capture_groups_inner_and_outer(store, tmp_path):
    dpl("create-repo", "readings", store=store)
    dpl("create-repo", "params", store=store)
    fill(store, "readings", {"/1-a.csv": b"r1", "/2-b.csv": b"r2", "/3-c.csv": b"r3"}, tmp_path)
    fill(store, "params", {"/1.json": b"p1", "/2.json": b"p2", "/4.json": b"p4"}, tmp_path)
    inner = {"join": [pfs("readings", "/(*)-*.csv", join_on="$1"), pfs("params", "/(*).json", join_on="$1")]}
    dpl("create-pipeline", write_spec(tmp_path, spec("inner", inner, cmd=LIST_STEP)), store=store)
    assert seen_by_datum(store, "inner") == [
        ["/pfs/params/1.json", "/pfs/readings/1-a.csv"],
        ["/pfs/params/2.json", "/pfs/readings/2-b.csv"],
    ]
    outer = {"join": [pfs("readings", "/(*)-*.csv", join_on="$1", outer_join=True), pfs("params", "/(*).json", join_on="$1")]}
    dpl("create-pipeline", write_spec(tmp_path, spec("outer", outer, cmd=LIST_STEP)), store=store)
    assert seen_by_datum(store, "outer") == [
        ["/pfs/params/1.json", "/pfs/readings/1-a.csv"],
        ["/pfs/params/2.json", "/pfs/readings/2-b.csv"],
        ["/pfs/readings/3-c.csv"],
    ]


def test_group_by_puts_every_match_of_a_key_in_one_datum(store, tmp_path):
    dpl("create-repo", "logs", store=store)
    dpl("create-repo", "meta", store=store)
    fill(store, "logs", {"/2024-01-a.log": b"1", "/2024-01-b.log": b"2", "/2024-02-a.log": b"3"}, tmp_path)
    fill(store, "meta", {"/2024-01.json": b"m1"}, tmp_path)
    group = {"group": [pfs("logs", "/(*)-(*)-*.log", group_by="$1-$2"), pfs("meta", "/(*).json", group_by="$1")]}
    dpl("create-pipeline", write_spec(tmp_path, spec("monthly", group, cmd=LIST_STEP)), store=store)
    assert seen_by_datum(store, "monthly") == [
        ["/pfs/logs/2024-01-a.log", "/pfs/logs/2024-01-b.log", "/pfs/meta/2024-01.json"],
        ["/pfs/logs/2024-02-a.log"],
    ]


# -------------------------------------------------------------- jobs


def test_pipelines_chain_into_a_dag_and_run_in_order_on_put_file(store, tmp_path):
    dpl("create-repo", "data", store=store)
    dpl("create-pipeline", write_spec(tmp_path, spec("upper", pfs("data"))), store=store)
    rev = ["sh", "-c", "for f in /pfs/upper/*; do rev < $f > /pfs/out/$(basename $f); done"]
    dpl("create-pipeline", write_spec(tmp_path, spec("reversed", pfs("upper"), cmd=rev)), store=store)
    proc = fill(store, "data", {"/a.txt": b"hello\n"}, tmp_path)
    assert "job upper@" in proc.stderr.decode() and "job reversed@" in proc.stderr.decode()
    assert outputs(store, "reversed") == {"/a.txt": b"OLLEH\n"}
    commit = json.loads(dpl("list-commit", "data@master", "-o", "json", store=store).stdout)[0]["id"]
    wave = json.loads(dpl("list-job", commit, "-o", "json", store=store).stdout)
    assert sorted(j["pipeline"] for j in wave) == ["reversed", "upper"]
    assert all(j["state"] == "success" and j["output_commit"] == commit for j in wave)


def test_incremental_job_processes_only_changed_datums_and_matches_a_fresh_run(store, tmp_path):
    dpl("create-repo", "data", store=store)
    files = {f"/f{i:04d}.txt": f"line {i}\n".encode() for i in range(1000)}
    fill(store, "data", files, tmp_path)
    dpl("create-pipeline", write_spec(tmp_path, spec("upper", pfs("data"), parallelism_spec={"constant": 2})), store=store)
    first = jobs(store, "upper")[0]
    assert (first["processed"], first["skipped"]) == (1000, 0)

    s = Store.open(store)
    change = tmp_path / "change"
    change.mkdir()
    (change / "f0001.txt").write_bytes(b"changed\n")
    (change / "new.txt").write_bytes(b"brand new\n")
    s.start_commit("data", "master")
    s.put_files("data", "master", plan_sources("/", [str(change)], recursive=True))
    s.delete_files("data", "master", ["/f0002.txt"])
    s.close()
    dpl("finish-commit", "data@master", store=store)
    job = jobs(store, "upper")[0]
    assert (job["processed"], job["skipped"], job["total"]) == (2, 998, 1000)
    out = outputs(store, "upper")
    assert "/f0002.txt" not in out and out["/f0001.txt"] == b"CHANGED\n" and out["/new.txt"] == b"BRAND NEW\n"

    # The same input from scratch, in another store, gives the same bytes.
    fresh = tmp_path / "fresh"
    dpl("init", fresh)
    dpl("create-repo", "data", store=fresh)
    final = {**{k: v for k, v in files.items() if k != "/f0002.txt"}, "/f0001.txt": b"changed\n", "/new.txt": b"brand new\n"}
    fill(fresh, "data", final, tmp_path)
    dpl("create-pipeline", write_spec(tmp_path, spec("upper", pfs("data"))), store=fresh)
    assert outputs(fresh, "upper") == out
    listing = lambda st: [(f["path"], f["hash"]) for f in json.loads(dpl("list-file", "upper@master", "-r", "-o", "json", store=st).stdout)]
    assert listing(store) == listing(fresh)


def test_transform_changes_reprocess_everything_and_parallelism_nothing(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {f"/{i}": b"x" for i in range(5)}, tmp_path)
    dpl("create-pipeline", write_spec(tmp_path, spec("p", pfs("data"))), store=store)
    dpl("update-pipeline", write_spec(tmp_path, spec("p", pfs("data"), parallelism_spec={"constant": 3})), store=store)
    assert (jobs(store, "p")[0]["processed"], jobs(store, "p")[0]["skipped"]) == (0, 5)
    dpl("update-pipeline", write_spec(tmp_path, spec("p", pfs("data"), parallelism_spec={"constant": 3})), "--reprocess", store=store)
    assert jobs(store, "p")[0]["processed"] == 5
    changed = spec("p", pfs("data"), cmd=["sh", "-c", "cp /pfs/data/* /pfs/out/"])
    dpl("update-pipeline", write_spec(tmp_path, changed), store=store)
    job = jobs(store, "p")[0]
    assert job["processed"] == 5 and outputs(store, "p")["/0"] == b"x"
    datums = json.loads(dpl("list-datum", f"p@{job['id']}", "-o", "json", store=store).stdout)
    assert {d["reason"] for d in datums} == {"spec changed"}
    history = json.loads(dpl("inspect-pipeline", "p", "--history", "-o", "json", store=store).stdout)["history"]
    assert [v["version"] for v in history] == [1, 2, 3, 4]
    assert [v["transform_changed"] for v in history] == [False, False, False, True]
    assert '"constant": 3' in history[1]["diff"] and "cp /pfs/data" in history[3]["diff"]


def test_two_datums_writing_one_path_fail_the_job_naming_both(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a": b"1", "/b": b"2"}, tmp_path)
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("dup", pfs("data"), cmd=["sh", "-c", "echo x > /pfs/out/same"])), store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "duplicate path output by different datums" in err and "/same" in err
    [job] = jobs(store, "dup")
    datums = json.loads(dpl("list-datum", f"dup@{job['id']}", "-o", "json", store=store).stdout)
    assert all(d["datum"][:12] in err for d in datums) and len(datums) == 2
    assert job["state"] == "failure"
    assert json.loads(dpl("list-branch", "dup", "-o", "json", store=store).stdout) == []


def test_failing_datum_is_retried_then_fails_the_job_with_its_log(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/ok": b"1", "/bad": b"2"}, tmp_path)
    step = ["sh", "-c", "if [ -e /pfs/data/bad ]; then echo 'cannot parse bad' >&2; exit 3; fi; cp /pfs/data/* /pfs/out/"]
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("p", pfs("data"), cmd=step, datum_tries=2)), store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "failed after 2 tries" in err and "exit" in err and "cannot parse bad" in err
    job = jobs(store, "p")[0]
    failed = [d for d in json.loads(dpl("list-datum", f"p@{job['id']}", "-o", "json", store=store).stdout) if d["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["tries"] == 2 and failed[0]["datum"][:12] in err
    logs = dpl("logs", "--job", f"p@{job['id']}", "--datum", failed[0]["datum"], store=store).stdout.decode()
    assert "cannot parse bad" in logs
    assert json.loads(dpl("list-branch", "p", "-o", "json", store=store).stdout) == []


def test_datum_timeout_kills_the_whole_process_tree(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a": b"1"}, tmp_path)
    step = ["sh", "-c", "sleep 97 & sleep 98"]
    started = time.time()
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("slow", pfs("data"), cmd=step, datum_timeout="1s", datum_tries=1)), store=store, check=False)
    assert proc.returncode == 1 and "timed out after 1s" in proc.stderr.decode()
    assert time.time() - started < 30
    time.sleep(0.5)
    leftovers = os.popen("pgrep -f 'sleep 9[78]'").read().split()
    assert leftovers == []


def test_job_timeout_fails_the_job(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {f"/{i}": b"1" for i in range(4)}, tmp_path)
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("slow", pfs("data"), cmd=["sleep", "5"], job_timeout="2s")), store=store, check=False)
    assert proc.returncode == 1 and "job_timeout" in proc.stderr.decode()


# ----------------------------------------------------------- sandbox


def test_step_sees_pachyderm_environment(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a.txt": b"1"}, tmp_path)
    step = ["sh", "-c", "echo $PACH_JOB_ID $PACH_DATUM_ID $data $PPS_PIPELINE_NAME > /pfs/out/env"]
    dpl("create-pipeline", write_spec(tmp_path, spec("env", pfs("data"), cmd=step)), store=store)
    job = jobs(store, "env")[0]
    [datum] = json.loads(dpl("list-datum", f"env@{job['id']}", "-o", "json", store=store).stdout)
    assert outputs(store, "env")["/env"].decode().split() == [job["id"], datum["datum"], "/pfs/data/a.txt", "env"]


def test_user_code_cannot_change_a_stored_byte_or_reach_the_network(store, tmp_path):
    if bwrap_path() is None:
        service_unavailable("bubblewrap", "bwrap is not installed (tests/services/install.sh installs it)")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a.txt": b"original"}, tmp_path)
    chunks = store / "chunks" / "objects"
    step = ["sh", "-c",
            f"echo evil > /pfs/data/a.txt; r1=$?; touch {chunks}/evil; r2=$?; "
            f"for f in $(find {chunks} -type f | head -3); do echo evil >> $f; done; r3=$?; "
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 22), 1)' 2>/dev/null; r4=$?; "
            "echo $r1 $r2 $r4 > /pfs/out/codes"]
    dpl("create-pipeline", write_spec(tmp_path, spec("evil", pfs("data"), cmd=step)), store=store)
    r1, r2, r4 = outputs(store, "evil")["/codes"].split()
    assert r1 != b"0" and r2 != b"0" and r4 != b"0"
    assert dpl("get-file", "data@master:/a.txt", store=store).stdout == b"original"
    assert not (chunks / "evil").exists()
    assert dpl("fsck", store=store).returncode == 0


def test_without_bubblewrap_the_same_spec_runs_as_a_plain_subprocess(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a.txt": b"abc"}, tmp_path)
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("plain", pfs("data"))), store=store, env={"DPL_SANDBOX": "none"})
    assert "bubblewrap" in proc.stderr.decode()
    assert outputs(store, "plain") == {"/a.txt": b"ABC"}
    job = jobs(store, "plain")[0]
    assert job["executor"]["sandbox"] == "subprocess"


# ------------------------------------------------------------ resume


def test_killed_engine_resumes_the_job_without_redoing_finished_datums(store, tmp_path):
    dpl("create-repo", "data", store=store)
    files = {f"/f{i:02d}": f"{i}\n".encode() for i in range(24)}
    fill(store, "data", files, tmp_path)
    slow = ["sh", "-c", "sleep 0.3; for f in /pfs/data/*; do tr 0-9 a-j < $f > /pfs/out/$(basename $f); done"]
    dpl("create-pipeline", write_spec(tmp_path, spec("slow", pfs("data"), cmd=slow)), "--no-wait", store=store)
    proc = popen("run", store=store)
    db = sqlite3.connect(store / "meta.db")
    deadline = time.time() + 60
    while db.execute("SELECT COUNT(*) FROM datums").fetchone()[0] < 6 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = dict(db.execute("SELECT datum, started FROM datums").fetchall())
    assert 6 <= len(before) < 24
    dpl("run", store=store)
    after = dict(db.execute("SELECT datum, started FROM datums").fetchall())
    assert len(after) == 24 and all(after[d] == t for d, t in before.items())  # none redone
    [job] = jobs(store, "slow")
    assert job["state"] == "success" and job["processed"] == 24
    assert outputs(store, "slow") == {p: data.decode().translate(str.maketrans("0123456789", "abcdefghij")).encode() for p, data in files.items()}


def test_stop_and_start_pipeline(store, tmp_path):
    dpl("create-repo", "data", store=store)
    dpl("create-pipeline", write_spec(tmp_path, spec("p", pfs("data"))), store=store)
    dpl("stop-pipeline", "p", store=store)
    fill(store, "data", {"/a": b"x"}, tmp_path)
    assert [j["reason"] for j in jobs(store, "p")] == ["create"]
    dpl("start-pipeline", "p", store=store)
    assert outputs(store, "p") == {"/a": b"X"}
    dpl("delete-pipeline", "p", store=store)
    assert json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout) == []
    dpl("create-pipeline", write_spec(tmp_path, spec("p", pfs("data"))), store=store)  # the name can be used again
    assert outputs(store, "p") == {"/a": b"X"}


def test_example_specs_are_valid():
    from pathlib import Path

    from dpl.engine.spec import load_spec

    examples = sorted((Path(__file__).parent.parent / "specs" / "examples").glob("*.json"))
    assert len(examples) >= 5
    for path in examples:
        assert load_spec(path.read_text(), str(path)).name


# ---------------------------------------------------------------- secrets


def test_secret_files_mount_inside_read_only_host_directories(store, tmp_path):
    """A secret at /etc/dpl-creds sits inside the host's read-only /etc, which
    the step still sees whole; a secret at a new top-level path works too."""
    if bwrap_path() is None:
        service_unavailable("bubblewrap", "bwrap is not installed (tests/services/install.sh installs it)")
    dpl("create-secret", "creds", "--from-literal", "token=tok-123", store=store)
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a": b"a"}, tmp_path)
    step = ["sh", "-c", "cat /etc/dpl-creds/token /secrets/creds/token > /pfs/out/seen; "
                        "test -s /etc/hostname && test -d /etc/ssl && echo etc-intact >> /pfs/out/seen; "
                        "touch /etc/dpl-creds/new 2>/dev/null || echo read-only >> /pfs/out/seen"]
    s = spec("secretive", pfs("data"), cmd=step)
    s["transform"]["secrets"] = [{"name": "creds", "mount_path": "/etc/dpl-creds"}, {"name": "creds", "mount_path": "/secrets/creds"}]
    dpl("create-pipeline", write_spec(tmp_path, s), store=store)
    assert outputs(store, "secretive") == {"/seen": b"tok-123tok-123etc-intact\nread-only\n"}
    assert not os.path.exists("/etc/dpl-creds")


def test_secret_files_without_a_sandbox_fail_the_job_in_one_sentence(store, tmp_path):
    dpl("create-secret", "creds", "--from-literal", "token=tok-123", store=store)
    dpl("create-repo", "data", store=store)
    s = spec("secretive", pfs("data"), cmd=["sh", "-c", "cat /secrets/token > /pfs/out/x"])
    s["transform"]["secrets"] = [{"name": "creds", "mount_path": "/secrets"}]
    dpl("create-pipeline", write_spec(tmp_path, s), store=store)
    src = tmp_path / "a"
    src.write_bytes(b"a")
    proc = dpl("put-file", "data@master:/a", src, store=store, check=False, env={"DPL_SANDBOX": "none"})
    err = proc.stderr.decode()
    # The commit landed, so put-file succeeds; the job's failure is said on stderr (issue 13).
    assert proc.returncode == 0 and "mounts secret files (/secrets/token), which needs the bwrap sandbox" in err
    assert "Traceback" not in err and "tok-123" not in err
    assert outputs(store, "secretive") == {}


def test_outputs_that_make_a_path_both_a_file_and_a_directory_fail_the_job(store, tmp_path):
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/a": b"a", "/b": b"b"}, tmp_path)
    step = ["sh", "-c", "if [ -e /pfs/data/a ]; then echo 1 > /pfs/out/d; else mkdir /pfs/out/d; echo 2 > /pfs/out/d/x; fi"]
    proc = dpl("create-pipeline", write_spec(tmp_path, spec("clash", pfs("data"), cmd=step)), store=store, check=False)
    err = proc.stderr.decode()
    job = jobs(store, "clash")[0]
    assert job["state"] == "failure"
    datums = {d["key"]: d["datum"][:12] for d in json.loads(dpl("list-datum", f"clash@{job['id']}", "-o", "json", store=store).stdout)}
    assert proc.returncode != 0 and (
        f"/d was written as a file by datum {datums['data:/a']} and as a directory (holding /d/x) by datum {datums['data:/b']}."
    ) in err, err
    # Nothing landed: the only commit is the job's failed output commit, on no branch (issue 13).
    assert [c["state"] for c in json.loads(dpl("list-commit", "clash", "-o", "json", store=store).stdout)] == ["failed"]
    assert json.loads(dpl("list-branch", "clash", "-o", "json", store=store).stdout) == []
