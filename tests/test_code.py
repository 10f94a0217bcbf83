"""A step's host code is part of its datums: an edit reruns them, a revert finds
the earlier outputs again, and provenance names the files that ran."""

from __future__ import annotations

import json

from dplcli import dpl
from readback import outputs
from test_pipelines import fill, jobs, pfs


def project(tmp_path, step: str, **dpl_block) -> tuple:
    """A spec beside its step script, as a user lays out a pipeline."""
    root = tmp_path / "project"
    (root / "lib").mkdir(parents=True, exist_ok=True)
    (root / "step.sh").write_text(step)
    spec = {
        "pipeline": {"name": "tag"},
        "transform": {"cmd": ["sh", "step.sh"]},
        "input": pfs("data"),
        **({"dpl": dpl_block} if dpl_block else {}),
    }
    path = root / "tag.json"
    path.write_text(json.dumps(spec))
    return root, path


STEP = 'for f in /pfs/data/*; do echo "{tag} $(cat $f)" > /pfs/out/$(basename $f); done\n'


def last_job(store):
    return jobs(store, "tag")[0]


def test_editing_the_step_script_reruns_every_datum_and_a_revert_reuses_outputs(store, tmp_path):
    dpl("create-repo", "data", store=store)
    root, spec = project(tmp_path, STEP.format(tag="v1"))
    dpl("create-pipeline", spec, store=store)
    fill(store, "data", {"/a": b"a", "/b": b"b", "/c": b"c"}, tmp_path)
    assert last_job(store)["processed"] == 3

    # An unchanged script: only the new datum runs.
    fill(store, "data", {"/d": b"d"}, tmp_path)
    assert (last_job(store)["processed"], last_job(store)["skipped"]) == (1, 3)

    # An edited script: every datum runs, and says why.
    (root / "step.sh").write_text(STEP.format(tag="v2"))
    fill(store, "data", {"/e": b"e"}, tmp_path)
    job = last_job(store)
    assert (job["processed"], job["skipped"]) == (5, 0)
    assert outputs(store, "tag") == {f"/{x}": f"v2 {x}\n".encode() for x in "abcde"}
    why = json.loads(dpl("why", f"tag@{job['id']}", "-o", "json", store=store).stdout)
    assert why["reasons"] == {"code changed: step.sh": 5}
    assert list(job["code"]["files"]) == ["step.sh"]

    # Back to v1: the datums v1 already ran come from the cache; only /e runs.
    (root / "step.sh").write_text(STEP.format(tag="v1"))
    fill(store, "data", {"/f": b"f"}, tmp_path)
    job = last_job(store)
    assert job["processed"] == 2  # /e and /f never ran under v1
    assert outputs(store, "tag") == {f"/{x}": f"v1 {x}\n".encode() for x in "abcdef"}


def test_declared_code_files_cover_helpers_the_command_does_not_name(store, tmp_path):
    dpl("create-repo", "data", store=store)
    step = '. ./lib/tag.sh\nfor f in /pfs/data/*; do echo "$TAG $(cat $f)" > /pfs/out/$(basename $f); done\n'
    root, spec = project(tmp_path, step, code=["step.sh", "lib/*.sh"])
    (root / "lib" / "tag.sh").write_text("TAG=one\n")
    dpl("create-pipeline", spec, store=store)
    fill(store, "data", {"/a": b"a", "/b": b"b"}, tmp_path)
    assert outputs(store, "tag") == {"/a": b"one a\n", "/b": b"one b\n"}

    (root / "lib" / "tag.sh").write_text("TAG=two\n")
    fill(store, "data", {"/c": b"c"}, tmp_path)
    job = last_job(store)
    assert (job["processed"], job["skipped"]) == (3, 0)
    assert outputs(store, "tag") == {"/a": b"two a\n", "/b": b"two b\n", "/c": b"two c\n"}
    assert sorted(job["code"]["files"]) == ["lib/tag.sh", "step.sh"]

    # File provenance names the code that wrote the output.
    prov = json.loads(dpl("provenance", "tag@master:/a", "-o", "json", store=store).stdout)
    assert sorted(prov["datum"]["code"]["files"]) == ["lib/tag.sh", "step.sh"]
    assert prov["datum"]["code"]["hash"] == job["code"]["hash"]
    assert "ran lib/tag.sh, step.sh" in dpl("provenance", "tag@master:/a", store=store).stdout.decode()


def test_bad_code_globs_are_refused_before_anything_is_created(store, tmp_path):
    dpl("create-repo", "data", store=store)
    for patterns, needle in ((["../outside.sh"], "must be a glob relative to the spec's directory"),
                             (["nothing-*.py"], "matches no file in")):
        _, spec = project(tmp_path, STEP.format(tag="v1"), code=patterns)
        proc = dpl("create-pipeline", spec, store=store, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "spec.dpl.code[0]" in err and needle in err and "Traceback" not in err
    assert json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout) == []


def test_inspect_job_names_the_code_files_it_ran(store, tmp_path):
    dpl("create-repo", "data", store=store)
    _, spec = project(tmp_path, STEP.format(tag="v1"))
    dpl("create-pipeline", spec, store=store)
    fill(store, "data", {"/a": b"a"}, tmp_path)
    job = last_job(store)
    text = dpl("inspect-job", f"tag@{job['id']}", store=store).stdout.decode()
    assert "Code:" in text and f"step.sh ({job['code']['hash'][:12]})" in text


def test_code_words_come_from_cmd_scripts_and_stdin_but_not_from_outside_the_directory(tmp_path):
    from dpl.engine.code import code_files
    from dpl.engine.spec import load_spec

    for name in ("train.py", "conf.yaml", "run.sh", "unused.py"):
        (tmp_path / name).write_text(name)
    spec = load_spec(json.dumps({
        "pipeline": {"name": "p"},
        "transform": {"cmd": ["bash", "-c", "python3 train.py --cfg=conf.yaml /pfs/in"], "stdin": ["sh run.sh ../x /etc/hostname"]},
        "input": pfs("data"),
    }), "spec.json")
    assert code_files(spec, str(tmp_path), "local") == (tmp_path.resolve(), ["conf.yaml", "run.sh", "train.py"])
    assert code_files(spec, str(tmp_path), "docker") == (None, [])  # the image digest stands for its code
    assert code_files(spec, None, "local") == (None, [])  # a spec read from stdin has no directory


def test_a_command_word_no_file_can_be_named_by_is_an_argument_not_code(tmp_path):
    from dpl.engine.code import code_files
    from dpl.engine.spec import load_spec

    (tmp_path / "train.py").write_text("x")
    long_script = "print(1)  # " + "x" * 5000  # longer than a file name may be: stat() says ENAMETOOLONG
    spec = load_spec(json.dumps({
        "pipeline": {"name": "p"},
        "transform": {"cmd": ["python3", "-c", long_script, "train.py"]},
        "input": pfs("data"),
    }), "spec.json")
    assert code_files(spec, str(tmp_path), "local") == (tmp_path.resolve(), ["train.py"])
