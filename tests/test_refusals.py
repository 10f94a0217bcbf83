"""Writes that would break provenance are refused, and the small things that
bit a new user (issue 13), through the real `dpl` command and the Python API."""

from __future__ import annotations

import json
import os

import pytest

from dpl.engine import Store
from dpl.engine.spec import load_specs
from dpl.storage.errors import RepoInUse
from dplcli import dpl

COPY_STEP = ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"]


def spec(name, repo="data", cmd=COPY_STEP, **pfs):
    return {"pipeline": {"name": name}, "transform": {"cmd": cmd},
            "input": {"pfs": {"repo": repo, "glob": "/", "name": "data", **pfs}}}


def write(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def put(store, target, *sources, **kw):
    return dpl("put-file", target, *sources, store=store, **kw)


def files(store, target) -> list[str]:
    return [e["path"] for e in json.loads(dpl("list-file", target, "-r", "-o", "json", store=store).stdout)]


def refused(proc, *words, hint=True):
    """A user error: non-zero, one sentence (and a hint), no traceback."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err and "\nerror: " in "\n" + err and ("\nhint: " in err or not hint), err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def piped(store, tmp_path):
    """data@master:/a, and pipeline `copy` that copies it."""
    dpl("create-repo", "data", store=store)
    (tmp_path / "a").write_text("one")
    put(store, "data@master:/a", tmp_path / "a")
    dpl("create-pipeline", write(tmp_path, "copy.json", json.dumps(spec("copy"))), store=store)
    assert files(store, "copy@master") == ["/a"]
    return store


# ------------------------------------------------- writes on an output branch


def test_writes_to_a_pipeline_output_branch_are_refused_and_its_jobs_still_land(piped, tmp_path):
    store = piped
    (tmp_path / "x").write_text("forged")
    before = len(json.loads(dpl("list-commit", "copy", "-o", "json", store=store).stdout))
    refused(put(store, "copy@master:/x", tmp_path / "x", check=False), "output branch of pipeline 'copy'")
    refused(dpl("delete-file", "copy@master:/a", store=store, check=False), "output branch of pipeline 'copy'")
    refused(dpl("start-commit", "copy@master", store=store, check=False), "output branch of pipeline 'copy'")
    assert len(json.loads(dpl("list-commit", "copy", "-o", "json", store=store).stdout)) == before
    # The pipeline's own jobs still land there.
    (tmp_path / "b").write_text("two")
    put(store, "data@master:/b", tmp_path / "b")
    assert files(store, "copy@master") == ["/a", "/b"]
    # Another branch of the output repo is no pipeline's output: writable.
    put(store, "copy@scratch:/x", tmp_path / "x")
    # The Python API refuses the same way.
    s = Store.open(store)
    with pytest.raises(RepoInUse, match="output branch"):
        s.put_bytes("copy", "master", {"/y": b"y"})
    with pytest.raises(RepoInUse, match="output branch"):
        s.start_commit("copy", "master")


# ------------------------------------------------------------ delete-repo --force


@pytest.fixture
def chain(piped, tmp_path):
    """data -> copy -> again, and an unrelated pipeline `other` over `elsewhere`."""
    store = piped
    dpl("create-pipeline", write(tmp_path, "again.json", json.dumps(spec("again", repo="copy"))), store=store)
    dpl("create-repo", "elsewhere", store=store)
    (tmp_path / "e").write_text("e")
    put(store, "elsewhere@master:/e", tmp_path / "e")
    dpl("create-pipeline", write(tmp_path, "other.json", json.dumps(spec("other", repo="elsewhere"))), store=store)
    return store


def names(store, what) -> set[str]:
    return {r["name"] for r in json.loads(dpl(f"list-{what}", "-o", "json", store=store).stdout)}


def test_delete_repo_force_lists_what_it_deletes_and_needs_yes_without_a_terminal(chain):
    store = chain
    err = refused(dpl("delete-repo", "data", "--force", store=store, input=b"", check=False), "--yes", "nothing was deleted")
    assert "pipelines: again, copy" in err
    assert "data (1 commit)" in err and "copy (1 commit)" in err and "again (1 commit)" in err
    assert names(store, "repo") == {"data", "copy", "again", "elsewhere", "other"}  # nothing went

    done = dpl("delete-repo", "data", "--force", "--yes", store=store, input=b"")
    assert "pipelines: again, copy" in done.stderr.decode()
    assert names(store, "repo") == {"elsewhere", "other"}
    assert names(store, "pipeline") == {"other"}
    # No pipeline is left reading a repo that does not exist.
    for p in json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout):
        for i in p["inputs"]:
            assert i.partition("@")[0] in names(store, "repo")
    assert dpl("fsck", store=store).returncode == 0
    dpl("run", store=store)  # nothing broken is left to run


def test_delete_repo_dry_run_changes_nothing_and_plain_delete_still_refuses(chain):
    s = Store.open(chain)
    plan = s.history.delete_repo("data", force=True, dry_run=True)
    assert plan["pipelines"] == ["again", "copy"] and plan["repos"] == ["data", "again", "copy"]
    assert len(plan["deleted"]) == 3 and plan["jobs"]
    assert {r["name"] for r in s.list_repos()} == {"data", "copy", "again", "elsewhere", "other"}
    with pytest.raises(RepoInUse, match="input of pipeline"):
        s.delete_repo("data")
    s.delete_repo("data", force=True)  # the Python API does not ask
    assert [p["name"] for p in s.list_pipelines()] == ["other"]


# ------------------------------------------------------------ paths and links


def test_diff_file_honours_the_path(store, tmp_path):
    dpl("create-repo", "data", store=store)
    for name in ("x", "y"):
        (tmp_path / name).write_text(name)
    put(store, "data@master:/a/x", tmp_path / "x")
    put(store, "data@master", tmp_path / "x", tmp_path / "y")  # /x and /y at the root
    put(store, "data@master:/b/y", tmp_path / "y")
    put(store, "data@master:/a/y", tmp_path / "y")
    diff = json.loads(dpl("diff-file", "data@master:/a", "data@master~3:/a", "-o", "json", store=store).stdout)
    assert [d["path"] for d in diff] == ["/a/y"]
    whole = json.loads(dpl("diff-file", "data@master", "data@master~3", "-o", "json", store=store).stdout)
    assert [d["path"] for d in whole] == ["/a/y", "/b/y", "/x", "/y"]


def test_put_file_into_a_directory_path_keeps_the_file_name(store, tmp_path):
    dpl("create-repo", "data", store=store)
    (tmp_path / "f.txt").write_text("hi")
    put(store, "data@master:/dir/", tmp_path / "f.txt")
    assert files(store, "data@master") == ["/dir/f.txt"]


def test_put_file_r_follows_links_to_directories_and_names_bad_links(store, tmp_path):
    dpl("create-repo", "data", store=store)
    tree = tmp_path / "tree"
    (tree / "real").mkdir(parents=True)
    (tree / "real" / "a").write_text("a")
    os.symlink("real", tree / "alias")
    put(store, "-r", "data@master:/t", tree)
    assert files(store, "data@master") == ["/t/alias/a", "/t/real/a"]

    os.symlink("..", tree / "real" / "up")
    refused(put(store, "-r", "data@master:/u", tree, check=False), "loop", "up'")
    os.unlink(tree / "real" / "up")
    os.symlink("missing", tree / "real" / "gone")
    err = refused(put(store, "-r", "data@master:/u", tree, check=False), "dangling", "gone'", "'missing'")
    assert "disappeared" not in err
    refused(put(store, "data@master:/g", tree / "real" / "gone", check=False), "dangling")
    assert files(store, "data@master") == ["/t/alias/a", "/t/real/a"]  # nothing half-put


def test_get_file_into_a_missing_directory_names_it(store, tmp_path):
    dpl("create-repo", "data", store=store)
    (tmp_path / "f").write_text("f")
    put(store, "data@master:/f", tmp_path / "f")
    missing = tmp_path / "no" / "such"
    err = refused(dpl("get-file", "data@master:/f", "-o", missing / "f", store=store, check=False), str(missing))
    assert "dpl-tmp" not in err


# ------------------------------------------------------------- small things


def test_an_input_on_a_branch_that_does_not_exist_warns_but_is_created(store, tmp_path):
    dpl("create-repo", "data", store=store)
    quiet = dpl("create-pipeline", write(tmp_path, "p.json", json.dumps(spec("first"))), store=store)
    assert "warning" not in quiet.stderr.decode()  # a new repo's master: made by its first put
    (tmp_path / "a").write_text("a")
    put(store, "data@master:/a", tmp_path / "a")
    proc = dpl("create-pipeline", write(tmp_path, "q.json", json.dumps(spec("typo", branch="mastr"))), store=store)
    err = proc.stderr.decode()
    assert "warning:" in err and "'mastr'" in err and "master" in err
    assert "typo" in names(store, "pipeline")


def test_fsck_writes_its_report_to_stdout(store):
    proc = dpl("fsck", store=store)
    assert "Checked" in proc.stdout.decode() and proc.stderr.decode() == ""


def test_list_job_of_an_unknown_pipeline_is_an_error(piped):
    store = piped
    refused(dpl("list-job", "nosuch", store=store, check=False), "nosuch")
    refused(dpl("list-job", "-p", "nosuch", store=store, check=False), "nosuch")
    jobs = json.loads(dpl("list-job", "copy", "-o", "json", store=store).stdout)
    assert jobs and {j["pipeline"] for j in jobs} == {"copy"}


# ----------------------------------------------------- several specs in a file

YAML_STREAM = """\
pipeline: {name: first}
transform:
  cmd: [sh, -c, "cp -r /pfs/data/. /pfs/out/"]
input:
  pfs: {repo: data, glob: /, name: data}
---
# reads the output of the one above, so order matters
pipeline: {name: second}
transform:
  cmd: [sh, -c, "cp -r /pfs/data/. /pfs/out/"]
input:
  pfs: {repo: first, glob: /, name: data}
"""


def test_a_spec_file_with_several_specs_creates_them_all_in_order(store, tmp_path):
    dpl("create-repo", "data", store=store)
    (tmp_path / "a").write_text("a")
    put(store, "data@master:/a", tmp_path / "a")
    proc = dpl("create-pipeline", "-f", write(tmp_path, "two.yaml", YAML_STREAM), store=store)
    err = proc.stderr.decode()
    assert err.index("created pipeline first") < err.index("created pipeline second")
    assert files(store, "second@master") == ["/a"]

    array = [spec("third", repo="second"), spec("fourth", repo="third")]
    dpl("create-pipeline", write(tmp_path, "two.json", json.dumps(array)), store=store)
    assert files(store, "fourth@master") == ["/a"]

    # update-pipeline takes them all too.
    upper = ["sh", "-c", "tr a-z A-Z < /pfs/data/a > /pfs/out/a"]
    array = [spec("third", repo="second", cmd=upper), spec("fourth", repo="third")]
    dpl("update-pipeline", write(tmp_path, "up.json", json.dumps(array)), store=store)
    assert dpl("get-file", "fourth@master:/a", store=store).stdout == b"A"


def test_a_bad_spec_anywhere_in_the_file_creates_none_and_is_named(store, tmp_path):
    dpl("create-repo", "data", store=store)
    bad = [spec("good"), {"pipeline": {"name": "bad"}, "input": {"pfs": {"repo": "data", "glob": "/"}}}]
    refused(dpl("create-pipeline", write(tmp_path, "bad.json", json.dumps(bad)), store=store, check=False), "spec 2 of 2", "transform", hint=False)
    assert names(store, "pipeline") == set()


def test_load_specs_reads_one_spec_an_array_a_json_stream_and_a_yaml_stream():
    one = json.dumps(spec("a"))
    assert [s.name for s in load_specs(one)] == ["a"]
    assert [s.name for s in load_specs(json.dumps([spec("a"), spec("b")]))] == ["a", "b"]
    assert [s.name for s in load_specs(one + "\n" + json.dumps(spec("b")))] == ["a", "b"]
    assert [s.name for s in load_specs("---\n" + YAML_STREAM + "...\n")] == ["first", "second"]
