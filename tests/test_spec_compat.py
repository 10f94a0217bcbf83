"""Real Pachyderm specs: cluster-only fields load, missing features are named, YAML and camelCase read as in pachctl."""

import copy
import json

import pytest

from dpl.engine.spec import load_spec
from dpl.engine.errors import InvalidSpec
from dplcli import dpl

BASE = {
    "pipeline": {"name": "edges"},
    "description": "Edge detection.",
    "transform": {"cmd": ["python3", "/edges.py"], "image": "example/opencv:1.0"},
    "input": {"pfs": {"repo": "images", "glob": "/*"}},
}


def spec(**fields) -> dict:
    """BASE with `fields` set; a dotted name (`transform.build`) sets a nested field."""
    out = copy.deepcopy(BASE)
    for name, value in fields.items():
        *parents, last = name.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[last] = value
    return out


def refusal(raw) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        load_spec(raw if isinstance(raw, str) else json.dumps(raw))
    return e.value


# Families of fields that steer Kubernetes or Pachyderm's cluster: accepted, ignored.
IGNORED = {
    "kubernetes (2.x)": dict(tolerations=[{"key": "dedicated", "operator": "EXISTS", "effect": "NO_SCHEDULE"}],
                             scheduling_spec={"node_selector": {"pool": "gpu"}, "priority_class_name": "high"},
                             pod_patch='[{"op": "add", "path": "/volumes/-", "value": {}}]', pod_spec="{}",
                             metadata={"labels": {"team": "vision"}, "annotations": {"a": "b"}}),
    "worker sizing (2.x)": dict(autoscaling=True, sidecar_resource_requests={"cpu": 0.5, "memory": "1Gi"},
                                sidecar_resource_limits={"cpu": 1, "memory": "2Gi"},
                                datum_set_spec={"number": 10, "size_bytes": 0, "per_worker": 0},
                                parallelism_spec={"constant": 2}),
    "bookkeeping (2.x)": dict(maximum_expected_uptime="24h", spec_commit={"branch": {"name": "master"}, "id": "abc"}, update=True,
                              **{"pipeline.project": {"name": "default"}, "input.pfs.project": "default",
                                 "input.pfs.repo_type": "user", "input.pfs.trigger": {"size": "1M"}}),
    "transform extras": {"transform.dockerfile": "./Dockerfile", "transform.debug": True, "transform.memory_volume": False,
                         "transform.image_pull_secrets": ["registry"], "transform.datum_batching": False},
    "Pachyderm 1.x": dict(enable_stats=True, standby=True, cache_size="64M", max_queue_size=1, batch=False,
                          chunk_spec={"number": 1}, hashtree_spec={"constant": 1}, scale_down_threshold="10m",
                          parallelism_spec={"coefficient": 0.5}),
    "features set to their off value": {"s3_out": False, "spout": None, "egress": None, "input.pfs.s3": False},
}


@pytest.mark.parametrize("fields", IGNORED.values(), ids=IGNORED)
def test_cluster_only_fields_are_accepted_and_change_nothing_dpl_runs(fields):
    s = load_spec(json.dumps(spec(**fields)))
    plain = load_spec(json.dumps(BASE))
    assert s.name == "edges" and s.input_repos() == [("images", "master")]
    assert s.transform_hash() == plain.transform_hash()  # so no datum is reprocessed because of them


def test_a_cron_input_takes_pachyderms_project_and_commit():
    s = load_spec(json.dumps(spec(input={"cron": {"name": "tick", "spec": "@every 60s", "project": "default", "commit": "x"}})))
    assert [c.name for c in s.cron_inputs()] == ["tick"]


UNSUPPORTED = [
    ({"spout": {}}, "spec.spout: spouts (pipelines that push data in from outside) are not supported by dpl."),
    ({"spout": {"marker": "m", "overwrite": True}}, "spec.spout: spouts (pipelines that push data in from outside) are not supported by dpl."),
    ({"service": {"internal_port": 8888, "external_port": 30888}},
     "spec.service: services (pipelines that serve their output on a port) are not supported by dpl."),
    ({"egress": {"URL": "s3://bucket/dir"}},
     "spec.egress: egress (copying the output to an object store or database after each job) is not supported by dpl."),
    ({"s3_out": True}, "spec.s3_out: s3_out (the step writes its output through an S3 gateway) is not supported by dpl."),
    ({"tf_job": {"tf_job": "{}"}}, "spec.tf_job: tf_job (a Kubeflow TFJob run in place of the transform) is not supported by dpl."),
    ({"determined": {"workspaces": ["w"]}},
     "spec.determined: the Determined integration (workspaces for Determined AI experiments) is not supported by dpl."),
    ({"reprocess": True}, "spec.reprocess: reprocess (a flag of Pachyderm's update request) is not read from a spec by dpl."),
    ({"dry_run": True}, "spec.dry_run: dry_run (check a spec without creating the pipeline) is not supported by dpl."),
    ({"transform.datum_batching": True},
     "spec.transform.datum_batching: datum batching (the step loops over datums itself, calling `pachctl next datum`) is not supported by dpl."),
    ({"transform.build": {"path": ".", "language": "python"}},
     "spec.transform.build: build pipelines (pachctl builds the step's code into an image) are not supported by dpl."),
    ({"input.pfs.s3": True},
     "spec.input.pfs.s3: S3 inputs (the step reads the input through an S3 gateway, not /pfs) are not supported by dpl."),
    ({"input": {"cross": [{"pfs": {"repo": "a", "glob": "/"}}, {"git": {"URL": "https://github.com/o/r.git", "name": "r"}}]}},
     "spec.input.cross[1].git: git inputs (a repo fed by a GitHub webhook) are not supported by dpl."),
    ({"input": {"atom": {"repo": "images", "glob": "/*"}}},
     "spec.input.atom: atom inputs are Pachyderm 1.7's old name for pfs inputs, which dpl does not read."),
]


@pytest.mark.parametrize("fields,sentence", UNSUPPORTED, ids=[s.split(":")[0] for _, s in UNSUPPORTED])
def test_unsupported_features_are_refused_by_name_with_a_hint(fields, sentence):
    e = refusal(spec(**fields))
    assert e.message == sentence
    assert e.hint


def test_a_spout_without_input_is_refused_as_a_spout_not_for_the_missing_input():
    raw = spec(spout={})
    del raw["input"]
    assert refusal(raw).message.startswith("spec.spout: spouts")


def test_a_typo_is_still_an_unknown_field_listing_what_is_allowed():
    e = refusal(spec(**{"transform.imagee": "x"}))
    assert e.message == "spec.transform.imagee: unknown field."
    assert "image," in e.hint and "working_dir" in e.hint
    assert "datum_batching" not in e.hint  # features dpl refuses are not offered
    e = refusal(spec(enable_stat=True))
    assert e.message == "spec.enable_stat: unknown field." and "enable_stats" in e.hint


CAMEL = {
    "pipeline": {"name": "edges"},
    "description": "Edge detection.",
    "transform": {"cmd": ["python3", "/edges.py"], "image": "example/opencv:1.0", "workingDir": "/src",
                  "acceptReturnCode": [3], "secrets": [{"name": "creds", "mountPath": "/creds"}]},
    "input": {"pfs": {"repo": "images", "glob": "/*", "emptyFiles": True}},
    "parallelismSpec": {"constant": 2},
    "datumTries": 2,
    "outputBranch": "out",
    "datumSetSpec": {"number": 1},
    "sidecarResourceRequests": {"cpu": 1},
}


def test_camel_case_field_names_as_in_pachyderm_2_docs_mean_the_same_spec():
    snake = spec(**{"transform.working_dir": "/src", "transform.accept_return_code": [3],
                    "transform.secrets": [{"name": "creds", "mount_path": "/creds"}], "input.pfs.empty_files": True},
                 parallelism_spec={"constant": 2}, datum_tries=2, output_branch="out",
                 datum_set_spec={"number": 1}, sidecar_resource_requests={"cpu": 1})
    camel = load_spec(json.dumps(CAMEL))
    assert camel.spec_hash() == load_spec(json.dumps(snake)).spec_hash()
    assert camel.parallelism == 2 and camel.output_branch == "out" and camel.pfs_inputs()[0].empty_files


def test_errors_name_a_camel_case_field_as_the_spec_wrote_it():
    assert refusal(dict(CAMEL, parallelismSpec={"constant": "two"})).message.startswith("spec.parallelismSpec.constant: expected integer")
    assert refusal(dict(CAMEL, s3Out=True)).message.startswith("spec.s3Out: s3_out (the step writes")
    twice = refusal(dict(CAMEL, datum_tries=2))
    assert twice.message == "spec.datumTries: the field is given twice, as datum_tries and datumTries."
    # user maps keep their keys: env names are not field names
    assert load_spec(json.dumps(spec(**{"transform.env": {"dataPath": "/pfs"}}))).transform["env"] == {"dataPath": "/pfs"}


YAML = """\
# The same pipeline as JSON_TWIN, as pachctl create pipeline -f takes it.
pipeline:
  name: ticker
description: Every minute, count the files.
transform:
  image: example/base:1.0
  cmd: [sh]
  stdin:
    - ls /pfs/images | wc -l > /pfs/out/count
  env:
    MODE: "on"
input:
  cross:
    - pfs:
        repo: images
        glob: /*
    - cron:
        name: tick
        spec: "@every 60s"
        start: 2021-01-01T00:00:00Z
parallelism_spec:
  constant: 1
datum_tries: 2
datum_timeout: 5m
enable_stats: true
"""

JSON_TWIN = {
    "pipeline": {"name": "ticker"},
    "description": "Every minute, count the files.",
    "transform": {"image": "example/base:1.0", "cmd": ["sh"], "stdin": ["ls /pfs/images | wc -l > /pfs/out/count"], "env": {"MODE": "on"}},
    "input": {"cross": [{"pfs": {"repo": "images", "glob": "/*"}},
                        {"cron": {"name": "tick", "spec": "@every 60s", "start": "2021-01-01T00:00:00Z"}}]},
    "parallelism_spec": {"constant": 1},
    "datum_tries": 2,
    "datum_timeout": "5m",
    "enable_stats": True,
}


def test_a_yaml_spec_is_the_same_spec_as_its_json_twin():
    from_yaml, from_json = load_spec(YAML, "ticker.yaml"), load_spec(json.dumps(JSON_TWIN), "ticker.json")
    assert from_yaml.spec_hash() == from_json.spec_hash()
    assert from_yaml.transform_hash() == from_json.transform_hash()
    assert from_yaml.to_json() == from_json.to_json()


def test_a_yaml_spec_is_refused_like_a_json_one():
    assert refusal(YAML.replace("    - pfs:", "    - pfss:")).message == "spec.input.cross[0].pfss: unknown field."
    assert refusal(YAML + "spout: {}\n").message.startswith("spec.spout: spouts")


@pytest.mark.parametrize("text,message", [
    ("pipeline: {name: p}\nb: [1\n", "ticker.yaml is not valid JSON or YAML: expected ',' or ']', but got '<stream end>' at line 3, column 1."),
    ("a: &x [1]\nb: *x\n", "ticker.yaml at line 2, column 4: YAML aliases (*name) are not allowed in a spec."),
    ("pipeline: {name: p}\non: 1\n", "ticker.yaml at line 2, column 1: the key 'on' is not a string."),
    ("pipeline: {name: a}\n---\npipeline: {name: b}\n", "ticker.yaml holds more than one YAML document."),
    ("just words", "ticker.yaml is not valid JSON: Expecting value at line 1, column 1."),
    ('{"pipeline": {"name": "p"},', "ticker.yaml is not valid JSON: Expecting property name enclosed in double quotes at line 1, column 28."),
])
def test_text_that_is_neither_json_nor_a_yaml_mapping_is_refused_with_where(text, message):
    with pytest.raises(InvalidSpec) as e:
        load_spec(text, "ticker.yaml")
    assert e.value.message == message


def test_create_pipeline_takes_a_yaml_file_and_refuses_a_spout_before_changing_anything(store, tmp_path):
    dpl("create-repo", "words", store=store)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hi\n")
    dpl("put-file", "words@master", tmp_path / "in", "-r", store=store)
    yaml_spec = tmp_path / "upper.yaml"
    yaml_spec.write_text("pipeline:\n  name: upper\ntransform:\n  cmd: [sh, -c, 'tr a-z A-Z < /pfs/words/a.txt > /pfs/out/a.txt']\n"
                         "input:\n  pfs: {repo: words, glob: /}\ntolerations: [{key: gpu, operator: EXISTS}]\n")
    dpl("create-pipeline", "-f", yaml_spec, store=store)
    assert dpl("get-file", "upper@master:/a.txt", store=store).stdout == b"HI\n"
    spout = tmp_path / "spout.yaml"
    spout.write_text("pipeline: {name: feed}\nspout: {}\ntransform: {cmd: [sh]}\n")
    proc = dpl("create-pipeline", spout, store=store, check=False)
    assert proc.returncode == 1 and proc.stderr.decode().startswith("error: spec.spout: spouts (pipelines that push data in from outside)")
    assert [p["name"] for p in json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout)] == ["upper"]
