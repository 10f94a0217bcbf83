"""The Ray executor, on a real two-node Ray cluster (see `ray_cluster` in conftest)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid

import pytest

from dplcli import dpl, popen

pytestmark = pytest.mark.ray

WORDS = {"a.txt": b"apple\n", "b.txt": b"banana\n", "c.txt": b"cherry\n"}
PARAMS = {"upper": b"upper", "hash": b"hash"}

# Three stages: a cross of every word with every parameter, a join of those
# results back to the word they came from, and a reduction of everything.
STAGES = [
    {
        "pipeline": {"name": "transform"},
        "input": {"cross": [{"pfs": {"repo": "words", "glob": "/*"}}, {"pfs": {"repo": "params", "glob": "/*"}}]},
        "transform": {"cmd": ["sh", "-c",
            "for w in /pfs/words/*; do for p in /pfs/params/*; do m=$(cat $p); n=$(basename $w .txt); "
            "if [ $m = upper ]; then tr a-z A-Z < $w; else sha256sum < $w; fi > /pfs/out/$n-$m.txt; done; done"]},
    },
    {
        "pipeline": {"name": "pairs"},
        "input": {"join": [
            {"pfs": {"repo": "transform", "glob": "/(*)-*.txt", "join_on": "$1"}},
            {"pfs": {"repo": "words", "glob": "/(*).txt", "join_on": "$1"}},
        ]},
        "transform": {"cmd": ["sh", "-c", "for t in /pfs/transform/*; do cat /pfs/words/* $t > /pfs/out/$(basename $t); done"]},
    },
    {
        "pipeline": {"name": "summary"},
        "input": {"pfs": {"repo": "pairs", "glob": "/"}},
        "transform": {"cmd": ["sh", "-c", "cat /pfs/pairs/* > /pfs/out/all.txt; wc -l < /pfs/out/all.txt > /pfs/out/count.txt"]},
    },
]  # fmt: skip


@pytest.fixture
def store(store):
    """The suite's store; on an S3 store (DPL_TEST_OBJECT_STORE) the workers,
    started without the S3 server's variables, get them forwarded."""
    config = json.loads((store / "config.json").read_text())
    if config["object_store"] != "local":
        config["ray_env"] = sorted(k for k in os.environ if k.startswith("AWS_"))
        (store / "config.json").write_text(json.dumps(config))
    return store


def put(root, repo: str, files: dict[str, bytes], tmp_path) -> None:
    src = tmp_path / f"src-{repo}-{uuid.uuid4().hex[:6]}"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    dpl("put-file", f"{repo}@master:/", "-r", src, store=root)


def write_spec(tmp_path, spec: dict):
    path = tmp_path / f"{spec['pipeline']['name']}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    return path


def repo_bytes(root, repo: str) -> dict[str, bytes]:
    """Every file of the repo's master branch: path -> bytes."""
    dest = root.parent / f"get-{repo}-{uuid.uuid4().hex[:6]}"
    dpl("get-file", "-r", f"{repo}@master:/", "-o", dest, store=root)
    return {"/" + str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def last_job(root, pipeline: str) -> dict:
    jobs = [j for j in json.loads(dpl("list-job", "-o", "json", store=root).stdout) if j["pipeline"] == pipeline]
    return jobs[0]


def run_stages(root, tmp_path, *executor_args) -> dict[str, dict[str, bytes]]:
    dpl("create-repo", "words", store=root)
    dpl("create-repo", "params", store=root)
    put(root, "words", WORDS, tmp_path)
    put(root, "params", PARAMS, tmp_path)
    for spec in STAGES:
        dpl("create-pipeline", "-f", write_spec(tmp_path, spec), *executor_args, store=root)
    return {s["pipeline"]["name"]: repo_bytes(root, s["pipeline"]["name"]) for s in STAGES}


def find_task_process(title: str, timeout: float = 120.0) -> int:
    """The pid of the Ray worker running a task named `title` (Ray sets the
    worker's process title to `ray::<task name>` while it runs one)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")[0].decode(errors="replace").strip()
            except OSError:
                continue
            if cmdline == title:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no process titled {title!r} appeared within {timeout:.0f} s")


def test_a_multi_stage_pipeline_on_ray_gives_the_bytes_the_local_executor_gives(ray_cluster, tmp_path):
    local_root, ray_root = tmp_path / "local", tmp_path / "ray"
    dpl("init", local_root)
    dpl("init", ray_root)
    on_local = run_stages(local_root, tmp_path, "--executor", "local")
    on_ray = run_stages(ray_root, tmp_path, "--executor", "ray")

    assert on_ray == on_local
    assert len(on_ray["transform"]) == 6 and len(on_ray["pairs"]) == 6
    assert on_ray["pairs"]["/b-upper.txt"] == b"banana\nBANANA\n"
    assert on_ray["summary"]["/count.txt"].strip() == b"12"
    for stage in STAGES:
        job = last_job(ray_root, stage["pipeline"]["name"])
        assert job["state"] == "success"
        assert job["executor"]["kind"] == "ray" and job["executor"]["nodes"] == 2


def test_a_worker_killed_mid_datum_is_resubmitted_and_the_job_succeeds(ray_cluster, store, tmp_path):
    dpl("create-repo", "words", store=store)
    put(store, "words", WORDS, tmp_path)
    spec = {
        "pipeline": {"name": "slow"},
        "input": {"pfs": {"repo": "words", "glob": "/*"}},
        "transform": {"cmd": ["sh", "-c", "sleep 3; for f in /pfs/words/*; do tr a-z A-Z < $f > /pfs/out/$(basename $f); done"]},
        "datum_tries": 1,  # a lost attempt must not spend the step's only try
        "dpl": {"executor": "ray"},
    }
    proc = popen("create-pipeline", "-f", write_spec(tmp_path, spec), store=store)
    try:
        victim = find_task_process("ray::dpl-datum:slow")
        time.sleep(1.0)  # well inside the step's sleep
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert b"attempt lost on the Ray cluster" in err  # said once, as a note

    assert repo_bytes(store, "slow") == {"/" + k: v.upper() for k, v in WORDS.items()}
    job = last_job(store, "slow")
    assert (job["state"], job["processed"], job["failed"]) == ("success", 3, 0)
    logs = json.loads(dpl("logs", "-j", f"slow@{job['id']}", "-o", "json", store=store).stdout)
    assert len(logs) == 3 and all(d["state"] == "success" for d in logs)
    retried = [d for d in logs if "[dpl] attempt lost on the Ray cluster: the worker process died" in d["stderr"]]
    assert len(retried) == 1 and "resubmitted (system retry 1 of 3)" in retried[0]["stderr"]


def test_a_failing_step_is_retried_datum_tries_times_and_no_more(ray_cluster, store, tmp_path):
    dpl("create-repo", "words", store=store)
    put(store, "words", {"a.txt": b"apple\n"}, tmp_path)
    spec = {
        "pipeline": {"name": "broken"},
        "input": {"pfs": {"repo": "words", "glob": "/*"}},
        "transform": {"cmd": ["sh", "-c", "echo it went wrong >&2; exit 3"]},
        "datum_tries": 2,
    }
    proc = dpl("create-pipeline", "-f", write_spec(tmp_path, spec), "--executor", "ray", store=store, check=False)
    assert proc.returncode != 0
    assert b"failed after 2 tries: exited with code 3" in proc.stderr
    assert b"it went wrong" in proc.stderr
    job = last_job(store, "broken")
    (datum,) = json.loads(dpl("list-datum", f"broken@{job['id']}", "-o", "json", store=store).stdout)
    assert (datum["state"], datum["tries"], datum["exit_code"]) == ("failed", 2, 3)


def test_a_datum_no_node_can_hold_fails_the_job_at_once_with_advice(ray_cluster, store, tmp_path):
    dpl("create-repo", "words", store=store)
    put(store, "words", {"a.txt": b"apple\n"}, tmp_path)
    spec = {
        "pipeline": {"name": "gpu"},
        "input": {"pfs": {"repo": "words", "glob": "/*"}},
        "transform": {"cmd": ["true"]},
        "resource_requests": {"cpu": 1, "memory": "64Mi", "gpu": {"type": "nvidia.com/gpu", "number": 1}},
    }
    started = time.time()
    proc = dpl("create-pipeline", "-f", write_spec(tmp_path, spec), "--executor", "ray", store=store, check=False)
    assert proc.returncode != 0 and time.time() - started < 60
    message = proc.stderr.decode()
    assert "No node of the Ray cluster" in message and "num_gpus=1" in message and "resource_requests" in message
    assert "Traceback" not in message


@pytest.mark.s3
def test_the_ray_executor_reads_and_writes_an_s3_store(ray_cluster, s3_server, tmp_path):
    root = tmp_path / "store"
    dpl("init", root, "--object-store", f"s3://{s3_server.bucket}/ray-{uuid.uuid4().hex[:8]}")
    config = json.loads((root / "config.json").read_text())
    # The cluster was not started with the S3 server's variables: forward them.
    config.update(executor="ray", ray_env=sorted(s3_server.environ()))
    (root / "config.json").write_text(json.dumps(config))
    dpl("create-repo", "words", store=root)
    dpl("create-repo", "params", store=root)
    put(root, "words", WORDS, tmp_path)
    put(root, "params", PARAMS, tmp_path)
    dpl("create-pipeline", "-f", write_spec(tmp_path, STAGES[0]), store=root)

    expected = {}
    for name, data in WORDS.items():
        stem = name.removesuffix(".txt")
        expected[f"/{stem}-upper.txt"] = data.upper()
        expected[f"/{stem}-hash.txt"] = hashlib.sha256(data).hexdigest().encode() + b"  -\n"
    assert repo_bytes(root, "transform") == expected
    assert last_job(root, "transform")["executor"]["kind"] == "ray"
    assert not (root / "chunks").exists()  # every chunk, the workers' too, went to the bucket


def test_resource_requests_become_ray_task_resources():
    pytest.importorskip("ray")
    from dpl.engine.executors.ray import task_resources
    from dpl.engine.spec import Spec

    spec = Spec({"resource_requests": {"cpu": 0.5, "memory": "512Mi", "gpu": {"type": "nvidia.com/gpu", "number": 2}}})
    assert task_resources(spec) == {"num_cpus": 0.5, "memory": 512 << 20, "num_gpus": 2}
    assert task_resources(Spec({})) == {"num_cpus": 1.0}


def test_datum_timeout_kills_the_step_on_its_worker(ray_cluster, store, tmp_path):
    dpl("create-repo", "words", store=store)
    put(store, "words", {"a.txt": b"apple\n"}, tmp_path)
    spec = {
        "pipeline": {"name": "stuck"},
        "input": {"pfs": {"repo": "words", "glob": "/*"}},
        "transform": {"cmd": ["sleep", "120"]},
        "datum_timeout": "2s",
        "datum_tries": 1,
    }
    started = time.time()
    proc = dpl("create-pipeline", "-f", write_spec(tmp_path, spec), "--executor", "ray", store=store, check=False)
    assert proc.returncode != 0 and time.time() - started < 60
    assert b"timed out after 2s (datum_timeout)" in proc.stderr
