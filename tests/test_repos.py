"""Data repos through the real CLI: repos, files, commits, branches."""

from __future__ import annotations

import json
import sqlite3

import pytest

from dplcli import dpl


def put(store, target, *sources, **kw):
    return dpl("put-file", target, *sources, store=store, **kw)


def ls(store, target, *flags):
    return json.loads(dpl("list-file", target, *flags, "-o", "json", store=store).stdout)


def test_init_is_found_from_subdirectories_like_git(tmp_path):
    dpl("init", cwd=tmp_path)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    env = {"DPL_STORE": ""}
    dpl("create-repo", "images", cwd=sub, env=env)
    repos = json.loads(dpl("list-repo", "-o", "json", cwd=tmp_path, env=env).stdout)
    assert [r["name"] for r in repos] == ["images"]


def test_outside_a_store_says_so_and_suggests_init(tmp_path):
    proc = dpl("list-repo", cwd=tmp_path, check=False, env={"DPL_STORE": ""})
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "not inside a dpl store" in err and "dpl init" in err
    assert "Traceback" not in err


def test_repo_lifecycle(store):
    dpl("create-repo", "images", "-d", "raw pictures", store=store)
    info = json.loads(dpl("inspect-repo", "images", "-o", "json", store=store).stdout)
    assert info["name"] == "images" and info["description"] == "raw pictures" and info["commits"] == 0
    assert dpl("create-repo", "images", store=store, check=False).returncode != 0
    dpl("delete-repo", "images", store=store)
    assert json.loads(dpl("list-repo", "-o", "json", store=store).stdout) == []


def test_list_repo_shows_size_commits_and_last_commit(store, tmp_path):
    dpl("create-repo", "data", store=store)
    (tmp_path / "f").write_bytes(b"x" * 1000)
    put(store, "data@master:/f", tmp_path / "f")
    put(store, "data@master:/g", tmp_path / "f")
    [repo] = json.loads(dpl("list-repo", "-o", "json", store=store).stdout)
    assert repo["size"] == 2000 and repo["commits"] == 2 and repo["last_commit"]


def test_put_file_directory_stdin_and_get_back(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1,2\n")
    (src / "sub" / "b.csv").write_text("3,4\n")
    put(store, "data@master", src, "-r", "-m", "first data")
    put(store, "data@master:/notes/readme.txt", "-", input=b"from stdin")
    assert dpl("get-file", "data@master:/sub/b.csv", store=store).stdout == b"3,4\n"
    assert dpl("get-file", "data@master:/notes/readme.txt", store=store).stdout == b"from stdin"
    out = tmp_path / "out"
    dpl("get-file", "data@master:/", "-r", "-o", out, store=store)
    assert (out / "a.csv").read_text() == "1,2\n" and (out / "sub" / "b.csv").read_text() == "3,4\n"
    dpl("get-file", "data@master:/a.csv", "-o", tmp_path / "single.csv", store=store)
    assert (tmp_path / "single.csv").read_text() == "1,2\n"
    commits = json.loads(dpl("list-commit", "data@master", "-o", "json", store=store).stdout)
    assert [c["description"] for c in commits] == ["", "first data"]  # newest first


def test_several_sources_are_one_commit(store, tmp_path):
    dpl("create-repo", "data", store=store)
    for name in "abc":
        (tmp_path / name).write_text(name)
    put(store, "data@master:/dir/", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert len(json.loads(dpl("list-commit", "data", "-o", "json", store=store).stdout)) == 1
    assert [e["path"] for e in ls(store, "data@master:/dir")] == ["/dir/a", "/dir/b", "/dir/c"]


def test_append_extends_the_file(store, tmp_path):
    dpl("create-repo", "logs", store=store)
    put(store, "logs@master:/log.txt", "-", input=b"one\n")
    put(store, "logs@master:/log.txt", "-", "--append", input=b"two\n")
    assert dpl("get-file", "logs@master:/log.txt", store=store).stdout == b"one\ntwo\n"
    [entry] = ls(store, "logs@master")
    assert entry["size"] == 8
    # The content hash is the hash of the whole new content, as if put at once.
    put(store, "logs@other:/log.txt", "-", input=b"one\ntwo\n")
    assert ls(store, "logs@other")[0]["hash"] == entry["hash"]


def test_list_file_shows_direct_children_with_directory_sizes(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_bytes(b"12345")
    (src / "d" / "y").write_bytes(b"123")
    (src / "top").write_bytes(b"1")
    put(store, "data@master", src, "-r")
    assert [(e["path"], e["type"], e["size"]) for e in ls(store, "data@master")] == [("/d", "dir", 8), ("/top", "file", 1)]
    assert [e["path"] for e in ls(store, "data@master:/d")] == ["/d/x", "/d/y"]
    assert [e["path"] for e in ls(store, "data@master", "-r")] == ["/d/x", "/d/y", "/top"]


def test_glob_file(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for p in ["a.csv", "b.txt", "d/c.csv"]:
        (src / p).write_text(p)
    put(store, "data@master", src, "-r")
    out = json.loads(dpl("glob-file", "data@master:/*.csv", "-o", "json", store=store).stdout)
    assert [e["path"] for e in out] == ["/a.csv"]
    out = json.loads(dpl("glob-file", "data@master:/*", "-o", "json", store=store).stdout)
    assert [(e["path"], e["type"]) for e in out] == [("/a.csv", "file"), ("/b.txt", "file"), ("/d", "dir")]


def test_diff_file_reports_added_modified_deleted_with_sizes(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep").write_text("same")
    (src / "change").write_text("old")
    (src / "gone").write_text("bye")
    put(store, "data@master", src, "-r")
    dpl("start-commit", "data@master", store=store)
    put(store, "data@master:/change", "-", input=b"newer")
    put(store, "data@master:/new", "-", input=b"hello")
    dpl("delete-file", "data@master:/gone", store=store)
    dpl("finish-commit", "data@master", store=store)
    diff = json.loads(dpl("diff-file", "data@master", "-o", "json", store=store).stdout)
    assert diff == [
        {"path": "/change", "change": "modified", "old_size": 3, "new_size": 5},
        {"path": "/gone", "change": "deleted", "old_size": 3, "new_size": None},
        {"path": "/new", "change": "added", "old_size": None, "new_size": 5},
    ]
    # Against an explicit other commit: the reverse diff.
    back = json.loads(dpl("diff-file", "data@master^", "data@master", "-o", "json", store=store).stdout)
    assert {d["path"]: d["change"] for d in back} == {"/change": "modified", "/gone": "added", "/new": "deleted"}


def test_delete_file_and_directory(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x")
    (src / "y").write_text("y")
    put(store, "data@master", src, "-r")
    dpl("delete-file", "data@master:/d", store=store)
    assert [e["path"] for e in ls(store, "data@master", "-r")] == ["/y"]
    # The old commit is still readable.
    assert dpl("get-file", "data@master^:/d/x", store=store).stdout == b"x"
    assert json.loads(dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout)["files"] == 1


def test_open_commit_is_invisible_until_finished(store):
    dpl("create-repo", "data", store=store)
    put(store, "data@master:/a", "-", input=b"a")
    cid = dpl("start-commit", "data@master", store=store).stdout.decode().strip()
    put(store, "data@master:/b", "-", input=b"b")
    put(store, "data@master:/c", "-", input=b"c")
    assert [e["path"] for e in ls(store, "data@master")] == ["/a"]
    dpl("finish-commit", "data@master", store=store)
    assert [e["path"] for e in ls(store, "data@master")] == ["/a", "/b", "/c"]
    head = json.loads(dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout)
    assert head["id"] == cid and head["files"] == 3
    assert len(json.loads(dpl("list-commit", "data@master", "-o", "json", store=store).stdout)) == 2


def test_refs_prefixes_and_ancestry(store):
    dpl("create-repo", "data", store=store)
    for i in range(4):
        put(store, "data@master:/v", "-", input=f"v{i}".encode())
    history = json.loads(dpl("list-commit", "data@master", "-o", "json", store=store).stdout)
    ids = [c["id"] for c in history]
    assert dpl("get-file", "data@master~3:/v", store=store).stdout == b"v0"
    assert dpl("get-file", "data@master^^:/v", store=store).stdout == b"v1"
    assert dpl("get-file", f"data@{ids[1][:8]}:/v", store=store).stdout == b"v2"
    assert dpl("get-file", f"data@{ids[1]}~1:/v", store=store).stdout == b"v1"
    dpl("create-branch", "data@stable", "--head", "master~2", store=store)
    assert dpl("get-file", "data@stable:/v", store=store).stdout == b"v1"
    branches = json.loads(dpl("list-branch", "data", "-o", "json", store=store).stdout)
    assert {b["branch"]: b["head"] for b in branches} == {"master": ids[0], "stable": ids[2]}
    dpl("delete-branch", "data@stable", store=store)
    assert [b["branch"] for b in json.loads(dpl("list-branch", "data", "-o", "json", store=store).stdout)] == ["master"]
    # The deleted branch's commit stays readable by id.
    assert dpl("get-file", f"data@{ids[2]}:/v", store=store).stdout == b"v1"


def test_ambiguous_commit_prefix_is_refused(store):
    from dpl.engine import Store

    dpl("create-repo", "data", store=store)
    s = Store.open(store)
    seen: dict[str, str] = {}
    clash = None
    while clash is None:  # two of ~300 random ids share a 4-hex-digit prefix
        s.start_commit("data", "scratch")
        cid = s.finish_commit("data", "scratch").id
        clash = cid[:4] if cid[:4] in seen else None
        seen[cid[:4]] = cid
    s.close()
    proc = dpl("inspect-commit", f"data@{clash}", store=store, check=False)
    assert proc.returncode != 0 and "several commits" in proc.stderr.decode()
    assert dpl("inspect-commit", f"data@{seen[clash]}", store=store).returncode == 0


def test_unicode_paths_and_empty_files(store, tmp_path):
    dpl("create-repo", "data", store=store)
    src = tmp_path / "src"
    (src / "données").mkdir(parents=True)
    (src / "données" / "日本語 файл.txt").write_text("unicode ✓")
    (src / "empty").write_bytes(b"")
    put(store, "data@master", src, "-r")
    assert dpl("get-file", "data@master:/données/日本語 файл.txt", store=store).stdout == "unicode ✓".encode()
    assert dpl("get-file", "data@master:/empty", store=store).stdout == b""
    entries = ls(store, "data@master", "-r")
    assert {e["path"]: e["size"] for e in entries} == {"/donn\u00e9es/日本語 файл.txt": len("unicode ✓".encode()), "/empty": 0}


def snapshot(store) -> list:
    db = sqlite3.connect(store / "meta.db")
    rows = [tuple(r) for t in ("repos", "branches", "commits") for r in db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
    db.close()
    return rows


@pytest.mark.parametrize(
    "args, needle",
    [
        (["put-file", "data@master:../x", "{file}"], "escapes the repo root"),
        (["put-file", "data@master:/../x", "{file}"], "escapes the repo root"),
        (["put-file", "data@master:/a/../../x", "{file}"], "escapes the repo root"),
        (["create-repo", "bad/name"], "not a valid repo name"),
        (["create-repo", "-x"], None),
        (["put-file", "data@bad~branch~:/x", "{file}"], None),
        (["put-file", "nope@master:/x", "{file}"], "does not exist"),
        (["get-file", "data@nobranch:/x"], "neither a branch nor a commit"),
        (["get-file", "data@0123456789abcdef:/x"], "No commit"),
        (["get-file", "data@master:/missing"], "does not exist"),
        (["put-file", "data@master:/x", "/no/such/source"], "does not exist"),
        (["put-file", "data@master:/x", "{dir}"], "is a directory"),
        (["create-branch", "data@b2", "--head", "deadbeef"], "No commit"),
        (["inspect-repo", "missing"], "does not exist"),
        (["delete-branch", "data@nobranch"], "does not exist"),
        (["list-commit", "data@master~9"], "further than the history"),
        (["finish-commit", "data@master"], None),
        (["put-file", "data@master:/kept/x", "{file}"], "/kept would be both a file and a directory (/kept/x is beneath it)"),
    ],
)
def test_bad_input_is_one_sentence_and_changes_nothing(store, tmp_path, args, needle):
    dpl("create-repo", "data", store=store)
    (tmp_path / "f").write_text("f")
    (tmp_path / "d").mkdir()
    put(store, "data@master:/kept", tmp_path / "f")
    before = snapshot(store)
    args = [a.format(file=tmp_path / "f", dir=tmp_path / "d") for a in args]
    proc = dpl(*args, store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert err.strip(), "no message on stderr"
    if needle:
        assert needle in err
    assert snapshot(store) == before
    assert dpl("get-file", "data@master:/kept", store=store).stdout == b"f"
