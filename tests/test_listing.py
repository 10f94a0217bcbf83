"""Listing and diffing read only what they need, and still say the same.

`diff-file` against the parent looks up only the paths the commit's own
layers name; `list-file` groups sorted rows into runs.  Both are checked
here against the plain computation on whole file tables.
"""

from __future__ import annotations

import pytest

from dpl.engine import Store
from dpl.engine.files import Source, diff_tables
from dplcli import dpl


@pytest.fixture
def s(tmp_path):
    store = Store.init(tmp_path / "store", durable=False)
    store.create_repo("r")
    return store


def put(s, tmp_path, files: dict, branch="master"):
    """Put {repo path: bytes} as one commit."""
    sources = []
    for i, (path, data) in enumerate(files.items()):
        local = tmp_path / f"src{len(list(tmp_path.iterdir()))}-{i}"
        local.write_bytes(data)
        sources.append(Source(str(local), path))
    return s.put_files("r", branch, sources)


def full_diff(s, commit):
    parent = s.get_commit("r", commit.parent)
    return diff_tables(s.commit_table(parent), s.commit_table(commit))


def test_diff_against_the_parent_matches_a_whole_table_comparison(s, tmp_path):
    put(s, tmp_path, {f"/d{i}/f{j}": f"{i}.{j}".encode() for i in range(5) for j in range(40)})
    commits = [
        put(s, tmp_path, {"/d1/f3": b"changed", "/new": b"added", "/d2/f0": b"2.0"}),  # one unchanged rewrite
        s.delete_files("r", "master", ["/d3"]),  # a whole directory
        s.delete_files("r", "master", ["/d1/f4"]),
        put(s, tmp_path, {"/d3/f1": b"back again"}),  # a file under the deleted directory
    ]
    s.start_commit("r", "master")
    put(s, tmp_path, {"/open/a": b"a", "/d0/f0": b"x"})
    s.delete_files("r", "master", ["/d4"])
    put(s, tmp_path, {"/d4/f9": b"only this one"})
    commits.append(s.finish_commit("r", "master"))
    for commit in commits:
        assert s.diff_files("r", commit.id).to_pylist() == full_diff(s, commit).to_pylist()
    assert s.diff_files("r", commits[0].id)["change"].to_pylist() == ["modified", "added"]


def test_list_file_groups_names_that_sort_around_the_slash(s, tmp_path):
    # "/a!b" sorts between "/a/..." and "/a0": each name is still one entry.
    put(s, tmp_path, {"/a!b": b"123", "/a/c": b"1234", "/a/d/e": b"12", "/a0": b"1", "/b/c": b"1", "/b/d": b"12"})
    rows = s.list_files("r", "master", "/").to_pylist()
    assert [(r["path"], r["type"], r["size"]) for r in rows] == [
        ("/a", "dir", 6), ("/a!b", "file", 3), ("/a0", "file", 1), ("/b", "dir", 3)]
    assert rows[1]["hash"] is not None and rows[0]["hash"] is None


def test_a_path_cannot_be_a_file_and_a_directory(s, tmp_path):
    from dpl.storage.errors import InvalidPath

    with pytest.raises(InvalidPath, match="would be both a file and a directory"):
        put(s, tmp_path, {"/a": b"12", "/a/c": b"1234"})


def test_list_file_merges_the_runs_of_a_name_split_by_a_sibling():
    # Stores written before dpl refused a file and a directory of one name
    # may hold "/a", "/a!b", "/a/c": the runs of "a" are split, and merged.
    import pyarrow as pa

    from dpl.engine.files import _group_runs

    grouped = _group_runs(pa.array(["a", "a!b", "a"]), pa.array([2, 3, 4]), pa.array([False, False, True]))
    assert grouped.to_pylist() == [{"name": "a", "size_sum": 6, "dir_max": True}, {"name": "a!b", "size_sum": 3, "dir_max": False}]


def test_list_file_of_a_directory_a_file_and_recursively(s, tmp_path):
    put(s, tmp_path, {f"/d/{i:03d}": bytes(i) for i in range(300)} | {"/d/sub/x": b"xyz", "/e": b"e"})
    put(s, tmp_path, {"/d/005": b"new"})
    listing = s.list_files("r", "master", "/d")
    assert listing.num_rows == 301 and listing["path"][5].as_py() == "/d/005" and listing["size"][5].as_py() == 3
    assert listing["path"][-1].as_py() == "/d/sub" and listing["type"][-1].as_py() == "dir"
    assert s.list_files("r", "master", "/d/sub/x").to_pylist()[0]["size"] == 3
    assert s.list_files("r", "master", "/", recursive=True).num_rows == 302


def test_plain_listing_aligns_every_row_and_keeps_arrow_rows_intact(s, tmp_path):
    # The longest name comes after the first thousand rows: every column still
    # starts at the same offset on every line, and nulls print as "-".
    files = {f"/f{i:05d}": b"x" * (i % 7) for i in range(1500)} | {"/zz-the-longest-name-of-all": b"long"}
    put(s, tmp_path, files)
    lines = dpl("list-file", "r@master", store=s.root).stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "SIZE", "HASH"] and len(lines) == 1 + len(files)
    type_at = lines[0].index("TYPE")
    assert {line.index(" file ") + 1 for line in lines[1:]} == {type_at}
    assert lines[-1].startswith("/zz-the-longest-name-of-all  file")
    hashes = {line.split()[-1] for line in lines[1:]}
    assert s.list_files("r", "master", "/")["hash"].to_pylist()[-1] in hashes


def test_version_names_the_installed_distribution():
    from importlib.metadata import version

    assert dpl("--version").stdout.decode() == f"dpl {version('dpl')}\n"
