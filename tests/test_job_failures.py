"""Job failures tell the truth (issue 13), through the real `dpl` command.

A job runs every datum even after one fails and names every failure; a
datum's state says what really happened to it; the command that landed a
commit succeeds even when a job it started fails, while `wait-commit` and
`dpl run` answer for the jobs; Ctrl-C stops the steps at once and leaves the
job to resume; a pipeline whose upstream failed is unrunnable, its failed
output commit kept; a deleted output commit is made again by the next run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from dpl.engine import Store
from dpl.engine.executors.local import bwrap_path
from dplcli import DPL, api, dpl
from readback import outputs

# Fails (exit 3, with a line on stderr) on files whose content starts with "bad"; copies the others.
PICKY = ["sh", "-c", "for f in /pfs/data/*; do if grep -q '^bad' $f; then echo \"cannot parse $(basename $f)\" >&2; exit 3; fi; "
         "cp $f /pfs/out/; done"]


def spec(name, cmd, repo="data", **extra):
    return {"pipeline": {"name": name}, "transform": {"cmd": cmd}, "input": {"pfs": {"repo": repo, "glob": "/*"}}, "datum_tries": 1, **extra}


def write_spec(tmp_path, s) -> str:
    path = tmp_path / f"{s['pipeline']['name']}-{time.time_ns()}.json"
    path.write_text(json.dumps(s))
    return str(path)


def put(store, repo, files: dict[str, bytes], tmp_path, *args, check=True, env=None):
    src = tmp_path / f"src-{time.time_ns()}"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return dpl("put-file", f"{repo}@master", src, "-r", *args, store=store, check=check, env=env)


def as_json(store, *args):
    return json.loads(dpl(*args, "-o", "json", store=store).stdout)


def last_job(store, pipeline):
    return api(store, "list_jobs", pipeline)[0]


def datums(store, pipeline, job) -> list[dict]:
    return api(store, "list_datums", pipeline, job["id"])


def datum_states(store, pipeline, job) -> dict[str, str]:
    return {d["key"]: d["state"] for d in datums(store, pipeline, job)}


# ------------------------------------------------------------ every datum runs


def test_a_job_runs_every_datum_and_names_every_failure_so_one_round_fixes_them(store, tmp_path):
    api(store, "create_repo", "data")
    api(store, "create_pipeline", json.dumps(spec("p", PICKY)), source=write_spec(tmp_path, spec("p", PICKY)))
    api(store, "run_jobs")  # its first job, over the empty repo
    files = {"ok1": b"1", "bad1": b"bad 1", "ok2": b"2", "bad2": b"bad 2"}
    proc = put(store, "data", files, tmp_path)  # parallelism 1: datums run one after another
    err = proc.stderr.decode()
    job = last_job(store, "p")
    assert job["state"] == "failure" and (job["processed"], job["failed"]) == (2, 2)
    states = datum_states(store, "p", job)
    assert states == {"data:/ok1": "success", "data:/ok2": "success", "data:/bad1": "failed", "data:/bad2": "failed"}
    assert "2 of 4 datums failed" in err
    ids = {d["key"]: d["datum"] for d in datums(store, "p", job)}
    for name in ("bad1", "bad2"):  # each failure with its id, exit code and log tail
        assert f"Datum {ids['data:/' + name][:12]} of pipeline 'p' failed after 1 try: exited with code 3." in err
        assert f"cannot parse {name}" in err
    assert "Traceback" not in err

    fixed = put(store, "data", {"bad1": b"3", "bad2": b"4"}, tmp_path)  # one round fixes both
    job = last_job(store, "p")
    assert job["state"] == "success", fixed.stderr.decode()
    assert (job["processed"], job["skipped"]) == (2, 2)  # what succeeded before is not run again
    assert outputs(store, "p") == {"/ok1": b"1", "/ok2": b"2", "/bad1": b"3", "/bad2": b"4"}


def test_list_datum_calls_no_datum_processed_that_did_not_run(store, tmp_path):
    api(store, "create_repo", "data")
    put(store, "data", {f"f{i}": b"x" for i in range(6)}, tmp_path)
    slow = spec("slow", ["sh", "-c", "sleep 0.8; cp /pfs/data/* /pfs/out/"], job_timeout="2s")
    proc = dpl("create-pipeline", write_spec(tmp_path, slow), store=store, check=False)
    assert proc.returncode == 1 and "timed out after 2s (job_timeout)" in proc.stderr.decode()
    job = last_job(store, "slow")
    states = list(datum_states(store, "slow", job).values())
    assert len(states) == 6 and set(states) <= {"success", "failed", "not-run"} and "not-run" in states
    assert job["processed"] == states.count("success") and job["failed"] == states.count("failed")
    logs = api(store, "datum_logs", "slow", job["id"])
    assert len(logs) == 6 - states.count("not-run")  # a datum that did not run has no run to show


# ---------------------------------------------------------------- exit codes


def test_put_file_succeeds_when_its_commit_lands_and_wait_commit_and_run_answer_for_the_jobs(store, tmp_path):
    api(store, "create_repo", "data")
    api(store, "create_pipeline", json.dumps(spec("p", PICKY)), source=write_spec(tmp_path, spec("p", PICKY)))

    proc = put(store, "data", {"x": b"bad x"}, tmp_path, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err  # the commit landed: a retry would put the data twice
    assert "committed data@" in err and "error: Job " in err and "cannot parse x" in err and "Traceback" not in err
    assert proc.stdout == b""  # the failure is on stderr
    assert api(store, "read_file", "data", "master", "/x") == b"bad x"
    commit = api(store, "resolve_commit", "data", "master").id
    waited = dpl("wait-commit", f"data@{commit}", store=store, check=False)
    assert waited.returncode == 1 and "cannot parse x" in waited.stderr.decode()

    # finish-commit too: the commit lands, the job's failure is said, the exit code is 0
    api(store, "start_commit", "data", "master")
    api(store, "put_bytes", "data", "master", {"/y": b"bad y"})  # into the open commit
    finished = dpl("finish-commit", "data@master", store=store, check=False)
    assert finished.returncode == 0 and "cannot parse y" in finished.stderr.decode()

    api(store, "put_bytes", "data", "master", {"/z": b"bad z"})  # its job waits for a runner
    ran = dpl("run", store=store, check=False)
    assert ran.returncode == 1 and "cannot parse" in ran.stderr.decode()


# --------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("sig, sandbox", [(signal.SIGINT, "bwrap"), (signal.SIGTERM, "none")])
def test_ctrl_c_stops_the_steps_at_once_and_the_job_resumes_without_redoing_datums(store, tmp_path, sig, sandbox):
    if sandbox == "bwrap" and bwrap_path() is None:
        pytest.skip("bubblewrap cannot make a sandbox here")
    env = {"DPL_SANDBOX": "none"} if sandbox == "none" else {}
    marker = f"{70 + sig}.{os.getpid() % 1000:03d}"  # a sleep no other test runs
    (tmp_path / "delay").write_text(marker)  # in the spec's directory: the step's working directory
    api(store, "create_repo", "data")
    put(store, "data", {"a": b"a", "b": b"b", "slow": b"s"}, tmp_path)
    step = ["sh", "-c", 'if [ -e /pfs/data/slow ]; then sleep "$(cat delay)"; fi; cp /pfs/data/* /pfs/out/']
    s = spec("p", step, parallelism_spec={"constant": 2})
    dpl("create-pipeline", write_spec(tmp_path, s), "--no-wait", store=store)

    runner = subprocess.Popen([DPL, "run"], env=dict(os.environ, DPL_STORE=str(store), **env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not _running(f"sleep {marker}") and time.time() < deadline:
            time.sleep(0.05)
        assert _running(f"sleep {marker}"), runner.stderr.read().decode() if runner.poll() is not None else "no step started"
        time.sleep(0.7)  # the fast datums finish meanwhile
        os.killpg(runner.pid, sig)  # as a terminal sends Ctrl-C: to the whole process group
        sent = time.time()
        while _running(f"sleep {marker}") and time.time() - sent < 10:
            time.sleep(0.02)
        stopped_in = time.time() - sent
        _, err = runner.communicate(timeout=10)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    assert stopped_in < 2, f"the step ran {stopped_in:.1f}s after the signal"
    assert "stopped; resume with `dpl run`" in err.decode() and "Traceback" not in err.decode()
    assert runner.returncode == 128 + sig
    job = last_job(store, "p")
    assert job["state"] == "created"  # resumable: nobody holds it
    assert datum_states(store, "p", job) == {"data:/a": "success", "data:/b": "success", "data:/slow": "not-run"}
    before = {d["key"]: d["started"] for d in datums(store, "p", job) if d["state"] == "success"}

    (tmp_path / "delay").write_text("0")
    dpl("run", store=store, env=env)
    job = last_job(store, "p")
    assert job["state"] == "success" and job["processed"] == 3
    after = {d["key"]: d["started"] for d in datums(store, "p", job)}
    assert all(after[k] == t for k, t in before.items())  # not redone
    assert outputs(store, "p") == {"/a": b"a", "/b": b"b", "/slow": b"s"}


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


# ------------------------------------------------------------ unrunnable jobs


def test_a_pipeline_whose_upstream_failed_is_unrunnable_and_the_failed_commit_stays_visible(store, tmp_path):
    api(store, "create_repo", "data")
    api(store, "put_bytes", "data", "master", {"/x": b"bad x"})
    dpl("create-pipeline", write_spec(tmp_path, spec("up", PICKY)), store=store, check=False)
    failed_job = last_job(store, "up")
    assert failed_job["state"] == "failure"

    # The failed output commit is kept, marked with the error, on no branch: nothing half-made is read downstream.
    [commit] = as_json(store, "list-commit", "up")
    assert commit["state"] == "failed" and commit["job"] == failed_job["id"] == failed_job["output_commit"]
    assert "1 of 1 datums failed" in commit["description"]
    inspected = as_json(store, "inspect-commit", f"up@{commit['id']}")
    assert inspected["state"] == "failed" and inspected["description"] == commit["description"]
    assert api(store, "list_branches", "up") == []

    # A pipeline created on top of it does not "succeed" with 0 datums: it cannot run.
    created = dpl("create-pipeline", write_spec(tmp_path, spec("down", ["sh", "-c", "cp /pfs/up/* /pfs/out/"], repo="up")),
                  store=store, check=False)
    down = last_job(store, "down")
    assert down["state"] == "unrunnable" and f"up@{failed_job['id'][:12]}" in down["error"]
    assert created.returncode == 1 and "unrunnable" in created.stderr.decode()
    assert [c.state for c in api(store, "list_commits", "down")] == ["failed"]

    # Fixing the data runs both.
    put(store, "data", {"x": b"good"}, tmp_path)
    assert (last_job(store, "up")["state"], last_job(store, "down")["state"]) == ("success", "success")
    assert outputs(store, "down") == {"/x": b"good"}


def test_deleting_the_bad_input_commit_takes_the_failed_job_and_its_commit_with_it(store, tmp_path):
    api(store, "create_repo", "data")
    api(store, "put_bytes", "data", "master", {"/x": b"good"})
    s = Store.open(store)
    try:
        s.create_pipeline(json.dumps(spec("p", PICKY)), source=write_spec(tmp_path, spec("p", PICKY)))
        s.run_jobs()
        bad = s.put_bytes("data", "master", {"/x": b"bad"})
        s.run_jobs()
        assert [c.state for c in s.list_commits("p")] == ["failed", "finished"]
        s.delete_commit("data", bad.id)  # no --force needed: the failed commit holds no data made from it
        assert [c.state for c in s.list_commits("p")] == ["finished"]
        assert [j["state"] for j in s.list_jobs("p")] == ["success"]
        assert s.fsck().ok
    finally:
        s.close()


# ------------------------------------------------------- deleted output commit


def test_deleting_an_output_commit_makes_the_next_run_recompute_it(store, tmp_path):
    api(store, "create_repo", "data")
    api(store, "put_bytes", "data", "master", {"/a": b"a"})
    # Each output carries 8 random bytes: a recomputed file differs from the one it replaces.
    step = ["sh", "-c", "for f in /pfs/data/*; do (cat $f; head -c8 /dev/urandom | od -An -tx1) > /pfs/out/$(basename $f); done"]
    dpl("create-pipeline", write_spec(tmp_path, spec("p", step)), store=store)
    put(store, "data", {"b": b"b"}, tmp_path)
    first = outputs(store, "p")
    assert sorted(first) == ["/a", "/b"]

    head = api(store, "resolve_commit", "p", "master").id
    dpl("delete-commit", f"p@{head}", store=store)
    assert sorted(outputs(store, "p")) == ["/a"]  # the branch fell back to its parent

    ran = dpl("run", store=store)
    assert b"no pending jobs" not in ran.stderr
    job = last_job(store, "p")
    assert job["state"] == "success" and job["reason"] == "recompute"
    assert datum_states(store, "p", job) == {"data:/a": "skipped", "data:/b": "success"}
    again = outputs(store, "p")
    assert sorted(again) == ["/a", "/b"]
    assert again["/a"] == first["/a"]  # still made from the same input by a commit that stays
    assert again["/b"] != first["/b"] and again["/b"].startswith(b"b")  # made again, not carried over
    assert api(store, "run_jobs") == []  # once is enough
