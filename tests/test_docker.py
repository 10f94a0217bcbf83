"""The docker executor against a real Docker engine: same specs, same bytes as the local sandbox.

Images are built locally by the `docker_engine` fixture (tests/services/dockerd.py);
nothing is pulled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid

import pytest

from dpl.engine import Store
from dplcli import api, dpl
from readback import outputs

pytestmark = pytest.mark.docker

# The spec field `dpl` is left out so that the store or the call picks the executor.
UPPER = ["sh", "-c", "cd /pfs/text && find . -type f | while read -r f; do mkdir -p /pfs/out/$(dirname $f); tr a-z A-Z < $f > /pfs/out/$f; done"]
REPORT = [  # fed through stdin: the step is `python3 -`
    "import hashlib, json, os",
    "report = {'greeting': os.environ['GREETING'], 'datum_input': os.environ['upper'], 'files': {}}",
    "for root, dirs, files in os.walk('/pfs/upper'):",
    "    for name in files:",
    "        path = os.path.join(root, name)",
    "        data = open(path, 'rb').read()",
    "        report['files'][os.path.relpath(path, '/pfs/upper')] = {'sha256': hashlib.sha256(data).hexdigest(), 'bytes': len(data), 'words': len(data.split())}",
    "name = os.path.basename(os.environ['upper'])",
    "open(f'/pfs/out/{name}.json', 'w').write(json.dumps(report, sort_keys=True, indent=1) + '\\n')",
]
TEXT = {
    "/a.txt": b"hello world\n",
    "/b.txt": "\u00dcber na\u00efve caf\u00e9 and more words\n".encode(),
    "/nested/c.txt": b"three\nlines\nhere\n",
    "/nested/deeper/d.bin": bytes(range(256)) * 40,
}


def make_store(tmp_path, name: str, executor: str | None = None):
    root = tmp_path / name
    dpl("init", root, *(["--executor", executor] if executor else []))
    return root


def fill(store, repo: str, files: dict[str, bytes], tmp_path, *args):
    src = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
    for rel, data in files.items():
        p = src / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return dpl("put-file", f"{repo}@master", src, "-r", *args, store=store)


def create(store, spec: dict, tmp_path, *args, check=True):
    path = tmp_path / f"{spec['pipeline']['name']}-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    return dpl("create-pipeline", path, *args, store=store, check=check)


def commits(store, repo: str) -> list:
    """The commits that landed: a job that did not succeed keeps only a failed output commit (issue 13)."""
    s = Store.open(store)
    try:
        return [c for c in s.list_commits(repo) if c.state != "failed"]
    finally:
        s.close()


def jobs(store, pipeline: str) -> list[dict]:
    return api(store, "list_jobs", pipeline)


def failed(proc) -> str:
    """The stderr of a command that must have failed cleanly: no traceback, one error line."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    return err


def spec(name: str, image: str, cmd: list[str], input: dict, **extra) -> dict:
    return {"pipeline": {"name": name}, "transform": {"image": image, "cmd": cmd}, "input": input, **extra}


def pfs(repo: str, glob: str = "/*", **kw) -> dict:
    return {"pfs": {"repo": repo, "glob": glob, **kw}}


@pytest.fixture
def images(docker_engine):
    yield docker_engine.images
    left = docker_engine.dpl_containers()
    assert not left, f"the docker executor left containers behind: {[c.name for c in left]}"


# ------------------------------------------------------------------ outputs


def test_two_stage_pipeline_gives_the_same_bytes_on_docker_and_local(tmp_path, images):
    specs = [
        spec("upper", images["busybox"], UPPER, pfs("text"), parallelism_spec={"constant": 2}),
        {
            **spec("report", images["python"], ["python3", "-"], pfs("upper")),
            "transform": {"image": images["python"], "cmd": ["python3", "-"], "stdin": REPORT, "env": {"GREETING": "hi there"}},
        },
    ]
    results = {}
    for executor in ("docker", "local"):
        store = make_store(tmp_path, executor, executor)  # the store's default executor
        dpl("create-repo", "text", store=store)
        for s in specs:
            create(store, s, tmp_path)
        fill(store, "text", TEXT, tmp_path)
        for name in ("upper", "report"):
            (job,) = [j for j in jobs(store, name) if j["processed"]]
            assert job["state"] == "success" and job["executor"]["kind"] == executor
        results[executor] = {name: outputs(store, name) for name in ("upper", "report")}

    assert results["docker"] == results["local"]
    assert results["docker"]["upper"]["/nested/c.txt"] == b"THREE\nLINES\nHERE\n"
    report = json.loads(results["docker"]["report"]["/nested.json"])
    assert report["greeting"] == "hi there" and report["datum_input"] == "/pfs/upper/nested"
    upper_bin = results["docker"]["upper"]["/nested/deeper/d.bin"]
    assert report["files"]["nested/deeper/d.bin"]["sha256"] == hashlib.sha256(upper_bin).hexdigest()


def test_image_digest_decides_what_is_reprocessed(tmp_path, docker_engine, images):
    from services.dockerd import busybox_rootfs, static_busybox

    tag = f"dpl-test/digest-{uuid.uuid4().hex[:8]}:latest"
    busybox = static_busybox(docker_engine.workdir)
    ids = [docker_engine.import_rootfs(busybox_rootfs(busybox, extra={"version": b"v1\n"}), tag)]
    try:
        store = make_store(tmp_path, "store", "docker")
        dpl("create-repo", "data", store=store)
        step = ["sh", "-c", "for f in $(find /pfs/data -type f); do cat /version $f > /pfs/out/$(basename $f); done"]
        create(store, spec("stamp", tag, step, pfs("data")), tmp_path)
        fill(store, "data", {"/a": b"a\n", "/b": b"b\n"}, tmp_path)
        fill(store, "data", {"/c": b"c\n"}, tmp_path)
        latest = jobs(store, "stamp")[0]
        assert (latest["processed"], latest["skipped"]) == (1, 2)  # same digest: a and b are skipped

        ids.append(docker_engine.import_rootfs(busybox_rootfs(busybox, extra={"version": b"v2\n"}), tag))  # same tag, new content
        fill(store, "data", {"/d": b"d\n"}, tmp_path)
        rebuilt = jobs(store, "stamp")[0]
        assert (rebuilt["processed"], rebuilt["skipped"]) == (4, 0)  # a new digest reprocesses every datum
        assert rebuilt["executor"]["image_digest"] == ids[1] != latest["executor"]["image_digest"] == ids[0]
        assert outputs(store, "stamp") == {f"/{n}": f"v2\n{n}\n".encode() for n in "abcd"}

        fill(store, "data", {"/e": b"e\n"}, tmp_path)
        again = jobs(store, "stamp")[0]
        assert (again["processed"], again["skipped"]) == (1, 4)
    finally:
        for image_id in ids:
            docker_engine.client.images.remove(image_id, force=True)


def test_a_step_running_as_another_user_writes_outputs_and_leaves_nothing_to_the_next_datum(tmp_path, images):
    store = make_store(tmp_path, "store", "docker")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {f"/f{i}": f"{i}\n".encode() for i in range(4)}, tmp_path)
    step = [
        "sh", "-c",
        'n=$(basename $data); ls /pfs/out > /tmp/seen; mkdir -p /pfs/out/$n/private; id -u > /pfs/out/$n/uid;'
        ' cp /tmp/seen /pfs/out/$n/seen; echo x > /pfs/out/$n/private/f; chmod 700 /pfs/out/$n/private',
    ]
    s = spec("owned", images["busybox"], step, pfs("data"))
    s["transform"].update(user="dpl", working_dir="/tmp")  # uid 1000 in the image's /etc/passwd
    create(store, s, tmp_path)
    got = outputs(store, "owned")
    for i in range(4):
        assert got[f"/f{i}/uid"] == b"1000\n"
        assert got[f"/f{i}/seen"] == b""  # /pfs/out was empty when each datum started
        assert got[f"/f{i}/private/f"] == b"x\n"


def test_an_image_without_a_shell_runs_one_container_per_datum(tmp_path, images):
    store = make_store(tmp_path, "store")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/x": b"1\n", "/y": b"2\n"}, tmp_path)
    s = spec("noshell", images["nosh"], ["/bin/busybox", "tee", "/pfs/out/got"], pfs("data"))
    s["transform"]["stdin"] = ["first line", "second line"]
    s["input"]["pfs"]["glob"] = "/"
    s["dpl"] = {"executor": "docker"}  # per pipeline, in a store whose default is local
    proc = create(store, s, tmp_path)
    assert "no /bin/sh" in proc.stderr.decode()
    assert outputs(store, "noshell") == {"/got": b"first line\nsecond line\n"}
    (job,) = jobs(store, "noshell")
    assert job["executor"]["kind"] == "docker"


def test_the_executor_can_be_chosen_per_call(tmp_path, images):
    store = make_store(tmp_path, "store")  # default: local
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/x": b"1\n"}, tmp_path)
    create(store, spec("where", images["busybox"], ["sh", "-c", "cat /proc/1/cgroup > /pfs/out/cg; hostname > /pfs/out/h"], pfs("data")),
           tmp_path, "--no-wait")
    dpl("run", "--executor", "docker", store=store)
    (job,) = jobs(store, "where")
    assert job["state"] == "success" and job["executor"]["kind"] == "docker"
    assert job["executor"]["image"] == images["busybox"] and job["executor"]["image_digest"].startswith("sha256:")


# ----------------------------------------------------------------- secrets


@pytest.mark.parametrize("executor", ["docker", "local"])
def test_secrets_reach_the_step_but_never_logs_specs_or_inspect(tmp_path, images, executor):
    if executor == "local" and not shutil.which("bwrap"):
        pytest.skip("the local executor mounts secret files only inside bubblewrap")
    token, cert = "tok-9f8e7d6c5b4a", "-----BEGIN CERT 5ca1ab1e-----\n"
    store = make_store(tmp_path, "store", executor)
    cert_file = tmp_path / "cert.pem"
    cert_file.write_text(cert)
    dpl("create-secret", "creds", "--from-literal", f"token={token}", "--from-file", f"cert={cert_file}", store=store)
    listed = json.loads(dpl("list-secret", "-o", "json", store=store).stdout)
    assert [(s["name"], s["keys"]) for s in listed] == [("creds", ["cert", "token"])]
    assert not (store / "secrets").exists()  # a row of the metadata database, which only its owner may read
    assert oct(os.stat(store / "meta.db").st_mode & 0o777) == "0o600"

    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/x": b"1\n"}, tmp_path)
    step = [
        "sh", "-c",
        'echo "token is $API_TOKEN"; cat /run/creds/cert >&2;'
        ' printf %s "$API_TOKEN" | sha256sum | cut -c1-64 > /pfs/out/token.sha; sha256sum < /run/creds/cert | cut -c1-64 > /pfs/out/cert.sha',
    ]
    s = spec("secretive", images["busybox"], step, pfs("data"))
    s["transform"]["secrets"] = [{"name": "creds", "key": "token", "env_var": "API_TOKEN"}, {"name": "creds", "mount_path": "/run/creds"}]
    create(store, s, tmp_path)

    got = outputs(store, "secretive")
    assert got["/token.sha"].strip() == hashlib.sha256(token.encode()).hexdigest().encode()
    assert got["/cert.sha"].strip() == hashlib.sha256(cert.encode()).hexdigest().encode()
    (job,) = jobs(store, "secretive")
    logs = api(store, "datum_logs", "secretive", job["id"])
    assert logs[0]["stdout"] == "token is ***\n" and "***" in logs[0]["stderr"]
    shown = [  # what logs, inspect-pipeline --history, inspect-job and list-datum render
        logs,
        api(store, "inspect_pipeline", "secretive", history=True),
        api(store, "inspect_job", "secretive", job["id"]),
        api(store, "list_datums", "secretive", job["id"]),
    ]
    for data in shown:
        text = json.dumps(data, default=str)
        assert token not in text and "5ca1ab1e" not in text
    for root, _, files in os.walk(store):  # nor any file of the store but the database that holds the secret
        for name in files:
            path = os.path.join(root, name)
            if not name.startswith("meta.db"):
                data = open(path, "rb").read()
                assert token.encode() not in data and b"5ca1ab1e" not in data, path

    dpl("delete-secret", "creds", store=store)
    proc = dpl("put-file", "data@master:/y", cert_file, store=store, check=False)
    # The commit landed, so put-file succeeds and says why its job failed (issue 13).
    assert proc.returncode == 0 and "Pipeline 'secretive' needs secret 'creds', which does not exist." in proc.stderr.decode()


# ---------------------------------------------------------------- failures


def test_a_missing_image_or_engine_fails_the_job_in_one_sentence(tmp_path, images):
    store = make_store(tmp_path, "store", "docker")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/x": b"1\n"}, tmp_path)
    err = failed(create(store, spec("ghost", "dpl-test/does-not-exist:1", ["true"], pfs("data")), tmp_path, check=False))
    assert "Pipeline 'ghost' cannot run on docker: image 'dpl-test/does-not-exist:1' is not on the Docker engine and could not be pulled" in err
    assert commits(store, "ghost") == []

    create(store, spec("cut-off", images["busybox"], ["true"], pfs("data")), tmp_path, "--no-wait")
    proc = dpl("run", store=store, check=False, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert f"Pipeline 'cut-off' cannot run on docker: the Docker engine at unix://{tmp_path}/no-engine.sock is not reachable" in failed(proc)
    assert commits(store, "cut-off") == []


def test_out_of_memory_and_non_zero_exits_name_pipeline_datum_and_cause(tmp_path, images):
    store = make_store(tmp_path, "store", "docker")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/ok1": b"1\n", "/big": b"2\n", "/ok2": b"3\n"}, tmp_path)
    hog = ["sh", "-c", 'cp -r /pfs/data/. /pfs/out/; if [ -e /pfs/data/big ]; then x=$(head -c 200000000 /dev/zero | tr "\\0" a); fi']
    s = spec("hog", images["busybox"], hog, pfs("data"), resource_limits={"memory": "32Mi", "cpu": 0.5}, datum_tries=1)
    err = failed(create(store, s, tmp_path, check=False))
    (job,) = jobs(store, "hog")
    bad = [d for d in api(store, "list_datums", "hog", job["id"]) if d["state"] == "failed"]
    assert len(bad) == 1 and bad[0]["key"].endswith("/big")
    assert f"Datum {bad[0]['datum'][:12]} of pipeline 'hog' failed after 1 try: killed: out of memory (resource_limits.memory 32Mi)" in err
    assert commits(store, "hog") == []  # the two datums that worked land nothing on their own

    s = spec("grumpy", images["busybox"], ["sh", "-c", 'cp -r /pfs/data/. /pfs/out/; [ ! -e /pfs/data/big ] || exit 3'], pfs("data"), datum_tries=2)
    err = failed(create(store, s, tmp_path, check=False))
    assert "of pipeline 'grumpy' failed after 2 tries: exited with code 3." in err
    assert commits(store, "grumpy") == []


def test_a_datum_over_its_timeout_or_the_job_deadline_is_killed_with_its_container(tmp_path, images, docker_engine):
    store = make_store(tmp_path, "store", "docker")
    dpl("create-repo", "data", store=store)
    fill(store, "data", {"/x": b"1\n", "/y": b"2\n"}, tmp_path)
    step = ["sh", "-c", "echo started; if [ -e /pfs/data/x ]; then sleep 300; fi; cp /pfs/data/* /pfs/out/"]
    s = spec("sleepy", images["busybox"], step, pfs("data"), datum_timeout="1s", datum_tries=1)
    started = time.time()
    err = failed(create(store, s, tmp_path, check=False))
    assert time.time() - started < 30
    assert "of pipeline 'sleepy' failed after 1 try: timed out after 1s (datum_timeout)." in err and "started" in err
    assert commits(store, "sleepy") == []

    s = spec("late", images["busybox"], ["sh", "-c", "sleep 300"], pfs("data", "/"), job_timeout="2s")
    err = failed(create(store, s, tmp_path, check=False))
    assert "pipeline 'late'" in err and "timed out after 2s (job_timeout)" in err
    assert commits(store, "late") == []
    assert not [p for c in docker_engine.client.containers.list() for p in c.top()["Processes"] if "sleep 300" in " ".join(p)]
