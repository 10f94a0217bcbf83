"""`dpl stop-job` stops a running job's steps, wherever the job runs.

The job runs in one `dpl run` process; the stop comes from another `dpl`
process, through the metadata only.  Within a couple of seconds the step's
processes are gone, the job is killed with the reason, nothing reached the
output branch, and a later job of the pipeline runs only what did not finish.
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

# Sleeps as long as the file `delay` in its working directory (the spec's), or, in a container
# or on a Ray worker (which do not see that directory), as long as the "slow" datum says.
STEP = ('if [ -e /pfs/data/slow ]; then sleep "$(cat delay 2>/dev/null || cat /pfs/data/slow)"; fi; '
        'cp /pfs/data/* /pfs/out/')


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def _wait_for(check, seconds: float, step: float = 0.02) -> float:
    """Seconds until `check()` is true (at most `seconds`)."""
    start = time.time()
    while not check() and time.time() - start < seconds:
        time.sleep(step)
    return time.time() - start


def run_and_stop(store, tmp_path, marker: str, env: dict, image: str | None = None, **spec_extra) -> tuple[str, float, subprocess.CompletedProcess, bytes]:
    """Run pipeline p in a `dpl run` process, stop its job with `dpl stop-job` once the
    fast datums are recorded and the slow one sleeps; (job id, seconds from the stop's
    return until the step was gone, the stop command, the runner's stderr)."""
    api(store, "create_repo", "data")
    api(store, "put_bytes", "data", "master", {"/a": b"a", "/b": b"b", "/slow": marker.encode()})
    spec = {"pipeline": {"name": "p"}, "transform": {"cmd": ["sh", "-c", STEP], **({"image": image} if image else {})}, "input": {"pfs": {"repo": "data", "glob": "/*"}},
            "parallelism_spec": {"constant": 2}, "datum_tries": 1, **spec_extra}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    dpl("create-pipeline", tmp_path / "p.json", "--no-wait", store=store)
    job = api(store, "pipeline_wave", "p")

    runner = subprocess.Popen([DPL, "run"], env=dict(os.environ, DPL_STORE=str(store), **env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(lambda: _running(f"sleep {marker}") or runner.poll() is not None, 120, 0.05)
        assert _running(f"sleep {marker}"), runner.stderr.read().decode() if runner.poll() is not None else "no step started"
        # the fast datums are recorded as they finish (the recorder flushes within a second)
        _wait_for(lambda: len(api(store, "datum_logs", "p", job)) == 2, 30, 0.1)
        stop = dpl("stop-job", f"p@{job}", store=store)
        gone_in = _wait_for(lambda: not _running(f"sleep {marker}"), 10)
        _, err = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    assert not _running(f"sleep {marker}")
    assert gone_in < 2, f"the step ran {gone_in:.1f}s after stop-job returned"
    assert b"stopped job p@" in stop.stderr and b"killed" in stop.stderr
    assert b"Traceback" not in err, err.decode()

    info = api(store, "inspect_job", "p", job)
    assert info["state"] == "killed" and "stopped by the user" in info["error"]
    # Its output commit is kept as Pachyderm keeps a killed job's: marked failed with the reason, on no branch.
    [commit] = api(store, "list_commits", "p")
    assert commit.state == "failed" and commit.id == info["output_commit"] == job and "stopped by the user" in commit.description
    assert api(store, "list_branches", "p") == []  # nothing half-made landed
    states = {d["key"]: d["state"] for d in api(store, "list_datums", "p", job)}
    assert states == {"data:/a": "success", "data:/b": "success", "data:/slow": "not-run"}
    return job, gone_in, stop, err


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_stop_job_from_another_process_kills_the_running_step_and_a_rerun_does_the_rest(store, tmp_path, sandbox):
    if sandbox == "bwrap" and bwrap_path() is None:
        pytest.skip("bubblewrap cannot make a sandbox here")
    env = {"DPL_SANDBOX": "none"} if sandbox == "none" else {}
    marker = f"60.{os.getpid() % 1000:03d}{len(sandbox)}"  # a 60 s sleep no other test runs
    (tmp_path / "delay").write_text(marker)  # in the spec's directory: the step's working directory
    job, _, _, _ = run_and_stop(store, tmp_path, marker, env)
    before = {d["key"]: d["started"] for d in api(store, "list_datums", "p", job) if d["state"] == "success"}

    (tmp_path / "delay").write_text("0")
    dpl("rerun-pipeline", "p", store=store, env=env)
    again = api(store, "list_jobs", "p")[0]
    assert again["id"] != job and again["state"] == "success"
    assert (again["processed"], again["skipped"]) == (1, 2)  # only the stopped datum ran again
    assert all(d["started"] == before[d["key"]] for d in api(store, "list_datums", "p", job) if d["key"] in before)
    assert outputs(store, "p") == {"/a": b"a", "/b": b"b", "/slow": marker.encode()}


@pytest.mark.docker
def test_stop_job_removes_the_running_container(store, tmp_path, docker_engine):
    marker = f"60.{os.getpid() % 1000:03d}7"
    run_and_stop(store, tmp_path, marker, {}, image=docker_engine.images["busybox"], dpl={"executor": "docker"})
    left = docker_engine.dpl_containers()
    assert not left, f"the stopped job left containers behind: {[c.name for c in left]}"


@pytest.mark.ray
def test_stop_job_cancels_the_running_ray_task(store, tmp_path, ray_cluster):
    marker = f"60.{os.getpid() % 1000:03d}8"
    run_and_stop(store, tmp_path, marker, {}, dpl={"executor": "ray"})


def test_stop_job_in_the_runners_own_process_stops_it_too(store, tmp_path):
    """As in `dpl serve`: the scheduler's thread runs the job, an API call on the same Store stops it."""
    import threading

    marker = f"60.{os.getpid() % 1000:03d}6"
    s = Store.open(store)
    try:
        s.create_repo("data")
        s.put_bytes("data", "master", {"/slow": marker.encode()})
        s.create_pipeline(json.dumps({"pipeline": {"name": "p"}, "transform": {"cmd": ["sh", "-c", STEP]},
                                      "input": {"pfs": {"repo": "data", "glob": "/*"}}}))
        job = s.pipeline_wave("p")
        ran: list = []
        runner = threading.Thread(target=lambda: ran.extend(s.run_jobs(job)))
        runner.start()
        _wait_for(lambda: _running(f"sleep {marker}") or not runner.is_alive(), 60, 0.05)
        assert _running(f"sleep {marker}")
        s.stop_job("p", job)
        gone_in = _wait_for(lambda: not _running(f"sleep {marker}"), 10)
        runner.join(30)
        assert gone_in < 2, f"the step ran {gone_in:.1f}s after stop_job returned"
        assert not runner.is_alive() and [j["state"] for j in ran] == ["killed"]
        assert [(c.state, c.id) for c in s.list_commits("p")] == [("failed", job)]
    finally:
        s.close()
