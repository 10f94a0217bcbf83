"""dpl export argo|kfp: the YAML each tool's own loader reads, and its steps run as a cluster would run them.

The DAG is three pipelines: `upper` (words, with a secret), `double` (nums)
and `pair`, a cross of their outputs.  The round trip plays the cluster:
it reads each step's command, env, secret references and secret volumes out
of the exported YAML, runs the steps in DAG order as separate processes,
each with a fresh store directory and only the environment its pod would
have, against a store on S3 + PostgreSQL, and compares every output with
the same pipelines run by `dpl` itself on an embedded store.  No Argo or
KFP cluster runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from dpl.engine import Store
from dpl.engine.export.argo import workflow_yaml
from dpl.engine.export.kfp import pipeline_yaml
from dpl.engine.export.plan import build as build_plan
from dplcli import DPL, dpl

hera = pytest.importorskip("hera.workflows", reason="the export extra: pip install -e '.[export]'")
kfp = pytest.importorskip("kfp", reason="the export extra: pip install -e '.[export]'")

SECRET = {"token": "s3cr3t-t0ken"}
SPECS = [
    {"pipeline": {"name": "upper"}, "input": {"pfs": {"repo": "words", "glob": "/*"}},
     "transform": {"cmd": ["sh", "-c", 'for f in /pfs/words/*; do { tr a-z A-Z < "$f"; echo "$TOKEN"; } > /pfs/out/$(basename "$f"); done'],
                   "secrets": [{"name": "api-token", "key": "token", "env_var": "TOKEN"}]},
     "resource_requests": {"cpu": 0.5, "memory": "64M"}},
    {"pipeline": {"name": "double"}, "input": {"pfs": {"repo": "nums", "glob": "/*"}},
     "transform": {"cmd": ["sh", "-c", 'for f in /pfs/nums/*; do echo $(( $(cat "$f") * 2 )) > /pfs/out/$(basename "$f"); done']}},
    {"pipeline": {"name": "pair"},
     "input": {"cross": [{"pfs": {"repo": "upper", "glob": "/*"}}, {"pfs": {"repo": "double", "glob": "/*"}}]},
     "transform": {"cmd": ["sh", "-c", 'cat /pfs/upper/* /pfs/double/* > /pfs/out/$(ls /pfs/upper)-$(ls /pfs/double)']},
     "resource_limits": {"memory": "1Gi", "gpu": {"type": "nvidia.com/gpu", "number": 1}}},
]
DATA = {"words": {"/a": b"apple\n", "/b": b"berry\n"}, "nums": {"/one": b"1\n", "/two": b"2\n"}}
S3, PG = "s3://bucket/prefix", "postgresql://dpl:hunter2@db.example:5432/dpl"


def make_pipelines(store: Store, *, secret: bool = True) -> None:
    """The DAG on `store`: data first, then the pipelines (each creation starts a wave of jobs, not run here)."""
    for repo, files in DATA.items():
        store.create_repo(repo)
        store.put_bytes(repo, "master", files)
    if secret:
        store.create_secret("api-token", SECRET)
    for spec in SPECS:
        store.create_pipeline(json.dumps(spec))


@pytest.fixture
def local_store(tmp_path):
    s = Store.init(tmp_path / "store")
    make_pipelines(s)
    return s.root


# ------------------------------------------------------------ the YAML


def test_argo_workflow_loads_in_hera_with_a_step_per_pipeline_and_edges_from_inputs(local_store, tmp_path):
    out = tmp_path / "workflow.yaml"
    dpl("export", "argo", "-o", out, "--object-store", S3, "--metadata", PG, "--image", "registry.example/dpl:1", store=local_store)
    text = out.read_text()
    w = hera.Workflow.from_file(out).build()  # hera's own loader and model
    assert w.kind == "Workflow" and w.spec.entrypoint == "dpl"
    templates = {t.name: t for t in w.spec.templates}
    dag = {t.name: t for t in templates["dpl"].dag.tasks}
    assert set(dag) == {"upper", "double", "pair"}
    assert {n: sorted(t.dependencies or []) for n, t in dag.items()} == {"upper": [], "double": [], "pair": ["double", "upper"]}
    for name, task in dag.items():
        c = templates[task.template].container
        assert c.image == "registry.example/dpl:1"
        assert c.command[:3] == ["dpl", "worker", name]
        assert c.command[c.command.index("--object-store") + 1] == S3
        assert c.command[c.command.index("--metadata") + 1] == "postgresql://dpl@db.example:5432/dpl"  # no password
        refs = {e.name: e.value_from.secret_key_ref for e in c.env if e.value_from}
        assert {k: (r.name, r.key, r.optional) for k, r in refs.items()} == {
            k: ("dpl-store", k, True) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD")}
    upper = templates["upper"]
    assert [(v.secret.secret_name, m.mount_path) for v, m in zip(upper.volumes, upper.container.volume_mounts)] == [
        ("api-token", "/var/run/dpl/secrets/api-token")]
    assert upper.container.command[-2:] == ["--secrets-dir", "/var/run/dpl/secrets"]
    assert {k: q.root for k, q in upper.container.resources.requests.items()} == {"cpu": "0.5", "memory": "64M"}
    assert {k: q.root for k, q in templates["pair"].container.resources.limits.items()} == {"memory": "1Gi", "nvidia.com/gpu": "1"}
    assert "hunter2" not in text and SECRET["token"] not in text


def test_kfp_pipeline_loads_in_kfp_and_its_ir_with_tasks_and_edges(local_store, tmp_path):
    from google.protobuf import json_format
    from kfp.components import load_component_from_file
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    out = tmp_path / "pipeline.yaml"
    dpl("export", "kfp", "upper", "double", "pair", "-o", out, "--object-store", S3, "--metadata", PG, store=local_store)
    text = out.read_text()
    assert load_component_from_file(str(out)).name == "dpl"  # kfp's own loader takes it as a (pipeline) component
    spec_doc, platform_doc = yaml.safe_load_all(text)
    ir = json_format.ParseDict(spec_doc, pipeline_spec_pb2.PipelineSpec())  # strict: an unknown field fails
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    tasks = ir.root.dag.tasks
    assert {n: sorted(t.dependent_tasks) for n, t in tasks.items()} == {"upper": [], "double": [], "pair": ["double", "upper"]}
    executors = platform.platforms["kubernetes"].deployment_spec.executors
    for name, task in tasks.items():
        assert not task.caching_options.enable_cache  # dpl skips done datums itself; a cached task would never run
        label = ir.components[task.component_ref.name].executor_label
        container = ir.deployment_spec["executors"][label]["container"]
        assert container["image"].startswith("dpl:")
        assert list(container["command"])[:3] == ["dpl", "worker", name]
        k8s = json_format.ParseDict(json_format.MessageToDict(executors[label]), kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        assert [(s.secret_name, [(k.secret_key, k.env_var) for k in s.key_to_env], s.optional) for s in k8s.secret_as_env] == [
            ("dpl-store", [(k, k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD")], True)]
        volumes = [(v.secret_name, v.mount_path) for v in k8s.secret_as_volume]
        assert volumes == ([("api-token", "/var/run/dpl/secrets/api-token")] if name == "upper" else [])
    assert "hunter2" not in text and SECRET["token"] not in text


def test_export_of_one_pipeline_has_no_edge_to_what_it_leaves_out(local_store):
    plan = build_plan(Store.open(local_store), ["pair"], image="dpl:test", object_store=S3, metadata=PG)
    w = hera.Workflow.from_yaml(workflow_yaml(plan)).build()
    dag = {t.name: t for t in next(t for t in w.spec.templates if t.dag).dag.tasks}
    assert list(dag) == ["pair"] and not dag["pair"].dependencies


def test_a_step_running_a_script_from_this_machine_says_the_image_must_hold_it(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("words")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "step.sh").write_text("cp -r /pfs/words/* /pfs/out/\n")
    spec = {"pipeline": {"name": "scripted"}, "input": {"pfs": {"repo": "words", "glob": "/*"}}, "transform": {"cmd": ["sh", "step.sh"]}}
    (tmp_path / "proj" / "spec.json").write_text(json.dumps(spec))
    s.create_pipeline(json.dumps(spec), source=str(tmp_path / "proj" / "spec.json"))
    s.create_pipeline(json.dumps(SPECS[1] | {"input": {"pfs": {"repo": "words", "glob": "/*"}}}))
    plan = build_plan(s, image="dpl:test", object_store=S3, metadata=PG)
    assert [s.pipeline for s in plan.steps] == ["double", "scripted"]
    assert len(plan.notes) == 1 and "'scripted' runs step.sh from " + str((tmp_path / "proj").resolve()) in plan.notes[0]


def test_a_store_a_cluster_cannot_reach_is_refused_in_one_sentence(local_store, tmp_path):
    r = dpl("export", "argo", "-o", tmp_path / "w.yaml", store=local_store, check=False)
    assert r.returncode == 1 and not (tmp_path / "w.yaml").exists()
    err = r.stderr.decode()
    assert err.startswith("error: The store keeps its chunks at 'local', which a step on a cluster cannot reach.") and "hint:" in err
    assert "Traceback" not in err
    r = dpl("export", "kfp", "nope", "--object-store", S3, "--metadata", PG, store=local_store, check=False)
    assert r.returncode == 1 and "nope" in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_a_worker_runs_only_its_pipeline_once_its_upstream_jobs_are_done(local_store):
    s = Store.open(local_store)

    def states():
        return {j["pipeline"]: j["state"] for j in s.list_jobs()}

    r = dpl("worker", "pair", store=local_store)  # its inputs' jobs have not run: nothing to do yet, not a failure
    assert "1 job of pair left for a later run" in r.stderr.decode()
    assert states() == {"upper": "created", "double": "created", "pair": "created"}
    s.delete_secret("api-token")
    r = dpl("worker", "upper", store=local_store, check=False)  # its step cannot get its secret: the job fails, so does the step
    assert r.returncode == 1 and "api-token" in r.stderr.decode() and "Traceback" not in r.stderr.decode()
    dpl("worker", "double", store=local_store)
    assert states() == {"upper": "failure", "double": "success", "pair": "created"}
    r = dpl("worker", "pair", store=local_store, check=False)  # an upstream job failed: unrunnable, and the step says so
    assert r.returncode == 1 and states()["pair"] == "unrunnable"


# ------------------------------------------------------- the round trip


def argo_pods(path) -> list[dict]:
    """Each step of an Argo Workflow as the pod Argo would start: in DAG order."""
    w = hera.Workflow.from_file(path).build()
    templates = {t.name: t for t in w.spec.templates}
    tasks = {t.name: t for t in templates[w.spec.entrypoint].dag.tasks}
    pods = {}
    for name, task in tasks.items():
        t = templates[task.template]
        mounts = {m.name: m.mount_path for m in t.container.volume_mounts or []}
        pods[name] = {
            "after": list(task.dependencies or []),
            "command": list(t.container.command),
            "env": {e.name: e.value for e in t.container.env if not e.value_from},
            "secret_env": {e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in t.container.env if e.value_from},
            "secret_volumes": {v.secret.secret_name: mounts[v.name] for v in t.volumes or []},
        }
    return in_dag_order(pods)


def kfp_pods(path) -> list[dict]:
    """Each task of a compiled KFP pipeline as the pod KFP would start: in DAG order."""
    with open(path) as f:
        spec, platform = yaml.safe_load_all(f.read())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pods = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][label]["container"]
        config = k8s.get(label, {})
        pods[name] = {
            "after": task.get("dependentTasks", []),
            "command": container["command"] + container.get("args", []),
            "env": {e["name"]: e["value"] for e in container.get("env", [])},
            "secret_env": {k["envVar"]: (s["secretName"], k["secretKey"]) for s in config.get("secretAsEnv", []) for k in s["keyToEnv"]},
            "secret_volumes": {s["secretName"]: s["mountPath"] for s in config.get("secretAsVolume", [])},
        }
    return in_dag_order(pods)


def in_dag_order(pods: dict) -> list[dict]:
    order, done = [], set()
    while len(order) < len(pods):
        ready = [n for n in sorted(pods) if n not in done and all(a in done for a in pods[n]["after"])]
        assert ready, "the DAG has a cycle"
        order += [dict(pods[n], name=n) for n in ready]
        done.update(ready)
    return order


def run_pods(pods: list[dict], cluster_secrets: dict, tmp_path) -> None:
    """Run each pod's command as its own process: a fresh store directory, only the pod's env,
    secretKeyRefs filled from `cluster_secrets`, secret volumes as files (an optional missing key is left out)."""
    for pod in pods:
        home = tmp_path / f"pod-{uuid.uuid4().hex[:8]}"
        volumes = home / "volumes"  # stands for the pod's root: /var/run/... inside it
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "DPL_STORE": str(home / "dpl")}
        env.update(pod["env"])
        env.update({var: cluster_secrets[name][key] for var, (name, key) in pod["secret_env"].items() if key in cluster_secrets.get(name, {})})
        for name, mount in pod["secret_volumes"].items():
            for key, value in cluster_secrets.get(name, {}).items():
                (volumes / mount.lstrip("/")).mkdir(parents=True, exist_ok=True)
                (volumes / mount.lstrip("/") / key).write_text(value)
        command = [DPL if pod["command"][0] == "dpl" else pod["command"][0]] + pod["command"][1:]
        if "--secrets-dir" in command:
            i = command.index("--secrets-dir") + 1
            command[i] = str(volumes / command[i].lstrip("/"))
        r = subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
        assert r.returncode == 0, f"step {pod['name']} failed:\n{r.stderr.decode()}"
        shutil.rmtree(home)


def outputs(store: Store) -> dict:
    found = {}
    for spec in SPECS:
        name = spec["pipeline"]["name"]
        found[name] = {e["path"]: store.read_file(name, "master", e["path"])
                       for e in store.list_files(name, "master", "/", recursive=True).to_pylist() if e["type"] == "file"}
    return found


@pytest.mark.s3
@pytest.mark.postgres
def test_exported_steps_run_against_s3_and_postgresql_give_what_dpl_gives(s3_server, postgres_db, tmp_path):
    # The shared store: made here, run only by the exported steps.
    shared = Store.init(tmp_path / "shared", object_store=f"s3://{s3_server.bucket}/export-{uuid.uuid4().hex[:8]}", metadata=postgres_db)
    make_pipelines(shared, secret=False)  # the secret lives in the cluster; the step takes it from its volume
    # The reference: the same pipelines, run by dpl itself on an embedded store.
    reference = Store.init(tmp_path / "reference")
    make_pipelines(reference)
    reference.run_jobs(None)

    # Exported in this process (the CLI's own path is tested above): the store's URLs, the S3 settings of this environment.
    plan = build_plan(shared, image="dpl:test")
    (tmp_path / "argo.yaml").write_text(workflow_yaml(plan))
    (tmp_path / "kfp.yaml").write_text(pipeline_yaml(plan))
    password = postgres_db.split(":")[2].split("@")[0]
    assert not any(password in (tmp_path / f"{fmt}.yaml").read_text() for fmt in ("argo", "kfp"))
    cluster = {"dpl-store": {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "PGPASSWORD": password},
               "api-token": SECRET}

    run_pods(argo_pods(tmp_path / "argo.yaml"), cluster, tmp_path)
    expected = outputs(reference)
    assert expected["pair"] and outputs(shared) == expected
    assert expected["upper"]["/a"] == b"APPLE\n" + SECRET["token"].encode() + b"\n"
    assert all(j["state"] == "success" for j in shared.list_jobs())

    # A new word: the KFP steps run only the new datums, the rest are skipped as dpl skips them.
    for s in (shared, reference):
        s.put_bytes("words", "master", {"/c": b"cherry\n"})
    reference.run_jobs(None)
    run_pods(kfp_pods(tmp_path / "kfp.yaml"), cluster, tmp_path)
    assert outputs(shared) == outputs(reference)
    last = {p: shared.list_jobs(p, limit=1)[0] for p in ("upper", "pair")}
    assert (last["upper"]["processed"], last["upper"]["skipped"]) == (1, 2)
    assert (last["pair"]["processed"], last["pair"]["skipped"]) == (2, 4)
    assert len(shared.list_jobs("double")) == 1  # nothing new to read: no job
    # Provenance survives: the pair output the steps made goes back, through upper's, to the new word's commit.
    def commits(node: dict) -> list[str]:
        return [node["commit"]] + [c for i in node.get("inputs", []) for c in commits(i)]

    prov = shared.commit_provenance("pair", shared.resolve_commit("pair", "master").id)
    assert prov["job"]["state"] == "success"
    assert shared.resolve_commit("words", "master").id in commits(prov)
