"""delete-commit, squash-commit, delete-branch, delete-repo and delete-pipeline keep provenance consistent."""

from __future__ import annotations

import json
import sqlite3

import pytest

from dpl.engine import Store
from dpl.engine.files import Source
from dpl.engine.fsck import fsck
from dpl.storage.errors import CommitInUse, RepoInUse, WouldOrphan
from dplcli import dpl

COPY = {
    "pipeline": {"name": "copy"},
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
    "transform": {"cmd": ["sh", "-c", "for d in /pfs/*; do [ $d = /pfs/out ] || cp -r $d/* /pfs/out/; done"]},
}


def put_text(s: Store, repo: str, path: str, text: str, tmp_path, branch="master"):
    f = tmp_path / "src"
    f.write_text(text)
    return s.put_files(repo, branch, [Source(str(f), path)])


def files(s: Store, repo: str, ref: str) -> dict[str, bytes]:
    _, table = s.file_table(repo, ref)
    return {p: s.read_file(repo, ref, p) for p in table["path"].to_pylist()}


def assert_consistent(s: Store):
    report = fsck(s)
    assert report.ok, [p.message for p in report.problems]


@pytest.fixture
def piped(tmp_path):
    """data@master with two commits, each copied by pipeline `copy`."""
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    put_text(s, "data", "/a", "one", tmp_path)
    s.create_pipeline(json.dumps(COPY))
    s.run_jobs()
    put_text(s, "data", "/b", "two", tmp_path)
    s.run_jobs()
    assert files(s, "copy", "master") == {"/a": b"one", "/b": b"two"}
    return s


def dump(s: Store) -> list:
    db = sqlite3.connect(s.root / "meta.db")
    rows = [r for t in ("repos", "branches", "commits", "jobs", "datums", "datum_outputs") for r in db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
    db.close()
    return rows


def test_deleting_an_input_commit_is_refused_with_the_downstream_commits_named(piped):
    s = piped
    head = s.resolve_commit("data", "master")
    before = dump(s)
    proc = dpl("delete-commit", f"data@{head.id}", store=s.root, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert f"copy@{head.id[:12]}" in err and "--force" in err
    assert dump(s) == before


def test_force_deletes_the_commit_and_what_was_made_from_it(piped, tmp_path):
    s = piped
    head = s.resolve_commit("data", "master")
    result = s.delete_commit("data", head.id, force=True)
    assert set(result["deleted"]) == {f"data@{head.id}", f"copy@{head.id}"}
    assert s.resolve_commit("data", "master").id == head.parent
    assert files(s, "data", "master") == {"/a": b"one"}
    assert files(s, "copy", "master") == {"/a": b"one"}  # the output falls back with its input
    assert s.db.one("SELECT 1 FROM jobs WHERE id=?", (head.id,)) is None
    assert_consistent(s)
    # The pipeline carries on from there.
    put_text(s, "data", "/c", "three", tmp_path)
    s.run_jobs()
    assert files(s, "copy", "master") == {"/a": b"one", "/c": b"three"}
    assert_consistent(s)


def test_only_a_commit_without_children_can_be_deleted(piped):
    s = piped
    first = s.resolve_commit("data", "master^")
    with pytest.raises(CommitInUse, match="only a commit without children") as e:
        s.delete_commit("data", first.id, force=True)
    assert "squash-commit" in e.value.hint


def test_an_open_commit_is_dropped_and_the_branch_is_untouched(piped, tmp_path):
    s = piped
    head = s.resolve_commit("data", "master").id
    opened = s.start_commit("data", "master")
    put_text(s, "data", "/x", "draft", tmp_path)
    s.delete_commit("data", opened.id)
    assert s.open_commit("data", "master") is None
    assert s.resolve_commit("data", "master").id == head
    assert_consistent(s)


def test_squash_keeps_every_file_of_every_remaining_commit(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    c1 = put_text(s, "data", "/a", "1", tmp_path)
    c2 = put_text(s, "data", "/b", "2", tmp_path)
    s.delete_files("data", "master", ["/a"])
    c4 = put_text(s, "data", "/c", "4", tmp_path)
    views = {c.id: files(s, "data", c.id) for c in s.list_commits("data", "master")}
    s.squash_commit("data", c2.id)
    history = s.list_commits("data", "master")
    assert [c.id for c in history][-1] == c1.id and len(history) == 3 and c2.id not in {c.id for c in history}
    for c in history:
        assert files(s, "data", c.id) == views[c.id]
    child = history[1]
    assert child.parent == c1.id
    assert {d["path"]: d["change"] for d in s.diff_files("data", child.id).to_pylist()} == {"/a": "deleted", "/b": "added"}
    assert files(s, "data", "master") == views[c4.id]
    assert_consistent(s)


def test_squash_refuses_a_head_and_moves_provenance_only_with_force(piped, tmp_path):
    s = piped
    head = s.resolve_commit("data", "master")
    with pytest.raises(CommitInUse, match="head of branch master"):
        s.squash_commit("data", head.id)
    first = s.resolve_commit("data", "master^")
    with pytest.raises(WouldOrphan, match="provenance"):
        s.squash_commit("data", first.id)
    reader = next(j for j in s.list_jobs("copy") if j["inputs"][0]["commit"] == first.id)
    s.squash_commit("data", first.id, force=True)
    job = s.inspect_job("copy", reader["id"])
    assert [i["commit"] for i in job["inputs"]] == [head.id]  # the child now holds that data
    assert files(s, "copy", "master") == {"/a": b"one", "/b": b"two"}
    assert_consistent(s)


def test_delete_branch_refuses_a_pipeline_input_and_an_open_commit(piped, tmp_path):
    s = piped
    with pytest.raises(RepoInUse, match="input of pipeline"):
        s.delete_branch("data", "master")
    with pytest.raises(RepoInUse, match="writes its output"):
        s.delete_branch("copy", "master")
    put_text(s, "data", "/z", "z", tmp_path, branch="dev")
    s.start_commit("data", "dev")
    with pytest.raises(CommitInUse, match="open commit"):
        s.delete_branch("data", "dev")
    s.delete_branch("data", "dev", force=True)
    assert [b["branch"] for b in s.list_branches("data")] == ["master"]
    assert_consistent(s)


def test_delete_repo_with_force_takes_the_output_made_from_it(piped):
    s = piped
    with pytest.raises(RepoInUse, match="input of pipeline"):
        s.delete_repo("data")
    with pytest.raises(RepoInUse, match="output repo of pipeline"):
        s.delete_repo("copy", force=True)
    s.delete_repo("data", force=True)
    assert s.db.one("SELECT COUNT(*) AS n FROM commits WHERE repo='copy'")["n"] == 0
    assert s.db.one("SELECT COUNT(*) AS n FROM jobs")["n"] == 0
    assert_consistent(s)


def test_delete_pipeline_keeps_provenance_consistent(piped):
    s = piped
    s.create_pipeline(json.dumps({**COPY, "pipeline": {"name": "again"}, "input": {"pfs": {"repo": "copy", "glob": "/*"}}}))
    s.run_jobs()
    with pytest.raises(RepoInUse, match="feeds pipeline"):
        s.delete_pipeline("copy")
    # A pipeline that read it once, and no longer does, still made commits from it.
    s.update_pipeline(json.dumps({**COPY, "pipeline": {"name": "again"}}))
    s.run_jobs()
    with pytest.raises(WouldOrphan, match="again@"):
        s.delete_pipeline("copy")
    s.delete_pipeline("copy", keep_repo=True)
    assert s.inspect_repo("copy")["kind"] == "user"
    assert_consistent(s)


def test_delete_pipeline_with_force_removes_the_downstream_output(piped):
    s = piped
    s.create_pipeline(json.dumps({**COPY, "pipeline": {"name": "again"}, "input": {"pfs": {"repo": "copy", "glob": "/*"}}}))
    s.run_jobs()
    s.delete_pipeline("copy", force=True)
    assert s.db.one("SELECT COUNT(*) AS n FROM commits WHERE repo='again'")["n"] == 0
    assert_consistent(s)
