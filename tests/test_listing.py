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


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """An Arrow layer of 3,001 files, then a directory deleted (a tombstone
    layer), then a file changed, one added and one deleted; and the files
    each commit holds, as a dict."""
    s = Store.init(tmp_path_factory.mktemp("layered") / "store", durable=False)
    s.create_repo("r")
    files = {f"/d{i % 5}/f{i:05d}": b"x" * (i % 9) for i in range(3000)} | {"/top.txt": b"top"}
    s.put_bytes("r", "master", files)
    s.delete_files("r", "master", ["/d3"])
    gone = {p: b for p, b in files.items() if p.startswith("/d3/")}
    after_delete = {p: b for p, b in files.items() if p not in gone}
    s.put_bytes("r", "master", {"/d1/f00001": b"changed", "/d5/new": b"new"})
    s.delete_files("r", "master", ["/d0/f00005"])
    last = {p: b for p, b in after_delete.items() if p != "/d0/f00005"} | {"/d1/f00001": b"changed", "/d5/new": b"new"}
    return s, after_delete, gone, last


def _rendered(capsys, rows: list[dict], columns) -> bytes:
    """What the renderer prints for rows given as dicts (its Python path, not the Arrow one)."""
    from dpl.cli import render

    capsys.readouterr()
    render.table(rows, columns, render.Output.table)
    return capsys.readouterr().out.encode()


def test_list_file_and_diff_file_print_what_plain_python_computes(layered, capsys):
    """Directory sizes, a deleted directory's tombstone and a diff that deletes
    a directory, through the CLI's Arrow path, against the same listings
    worked out in Python from the files each commit holds."""
    from dpl.cli.fast import DIFF_COLUMNS, FILE_COLUMNS

    s, after_delete, gone, last = layered

    def hash_of(path):
        return s.file_row("r", "master", path)["hash"].hex()

    top: dict[str, dict] = {}
    for path, data in sorted(last.items()):
        name, _, rest = path[1:].partition("/")
        entry = top.setdefault("/" + name, {"path": "/" + name, "type": "dir" if rest else "file", "size": 0,
                                           "hash": None if rest else hash_of(path)})
        entry["size"] += len(data)
    assert "/d3" not in top and top["/d5"]["size"] == 3
    assert dpl("list-file", "r@master", store=s.root).stdout == _rendered(capsys, list(top.values()), FILE_COLUMNS)
    d1 = [{"path": p, "type": "file", "size": len(b), "hash": hash_of(p)} for p, b in sorted(last.items()) if p.startswith("/d1/")]
    assert dpl("list-file", "r@master:/d1", store=s.root).stdout == _rendered(capsys, d1, FILE_COLUMNS)
    everything = [{"path": p, "type": "file", "size": len(b), "hash": hash_of(p)} for p, b in sorted(last.items())]
    assert dpl("list-file", "-r", "r@master", store=s.root).stdout == _rendered(capsys, everything, FILE_COLUMNS)

    deleted = [{"change": "deleted", "path": p, "old_size": len(b), "new_size": None} for p, b in sorted(gone.items())]
    assert len(deleted) == 600
    assert dpl("diff-file", "r@master^^", store=s.root).stdout == _rendered(capsys, deleted, DIFF_COLUMNS)
    changes = [{"change": "modified", "path": "/d1/f00001", "old_size": 1, "new_size": 7},
               {"change": "added", "path": "/d5/new", "old_size": None, "new_size": 3}]
    assert dpl("diff-file", "r@master^", store=s.root).stdout == _rendered(capsys, changes, DIFF_COLUMNS)
    since = [{"change": "deleted", "path": "/d0/f00005", "old_size": 5, "new_size": None}] + changes
    since.sort(key=lambda r: r["path"])
    assert dpl("diff-file", "r@master", "r@master^^", store=s.root).stdout == _rendered(capsys, since, DIFF_COLUMNS)
    assert len(after_delete) == 2401


def test_listing_and_diffing_import_neither_pyarrow_compute_nor_dateutil(layered):
    """pyarrow.compute costs ~0.1 s to import, a third of a listing's CPU
    (issue 12); dateutil (~5 ms) comes with the first str whose Arrow type
    pyarrow infers.  The deleted directory puts a tombstone in the diff's way."""
    import os
    import subprocess
    import sys

    s = layered[0]
    for args in (["list-file", "r@master"], ["list-file", "-r", "r@master"], ["diff-file", "r@master^^"],
                 ["diff-file", "r@master"], ["list-file", "r@master:/d1"]):
        code = (f"import sys; sys.argv = ['dpl', *{args!r}]\nfrom dpl.cli import run\nrun()\n"
                "print(sorted(m for m in ('pyarrow.compute', 'dateutil', 'numpy') if m in sys.modules), file=sys.stderr)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, DPL_STORE=str(s.root)))
        assert out.returncode == 0 and out.stderr.strip() == "[]", (args, out.stderr)
        assert out.stdout.count("\n") > 1


@pytest.mark.parametrize("filler", [0, 400])
def test_a_directory_lists_by_name_whether_walked_or_grouped(s, tmp_path, filler):
    """A few entries are walked (each subdirectory skipped by a binary search),
    many are grouped row by row: either way a directory "a" lists before the
    file "a.txt" that sorts before "a/..." by path, and a directory's size is
    the sum of its files'."""
    files = {"/t/a.txt": b"1", "/t/a/x": b"22", "/t/a/y/z": b"333", "/t/a-b/c": b"4444", "/t/a0": b"5",
             "/t/b": b"66", "/t/é/f": b"7"} | {f"/t/many/{i:04d}": b"8" for i in range(600)}
    files |= {f"/t/filler{i:04d}": b"9" * (i % 3) for i in range(filler)}
    put(s, tmp_path, files)
    expected: dict[str, tuple[str, int]] = {}
    for path, data in files.items():
        name, _, rest = path[len("/t/"):].partition("/")
        kind, size = expected.get("/t/" + name, ("dir" if rest else "file", 0))
        expected["/t/" + name] = (kind, size + len(data))
    rows = s.list_files("r", "master", "/t").to_pylist()
    assert [(r["path"], r["type"], r["size"]) for r in rows] == [(p, *expected[p]) for p in sorted(expected)]
    assert [r["path"] for r in rows][:4] == ["/t/a", "/t/a-b", "/t/a.txt", "/t/a0"]
    assert all((r["hash"] is None) == (r["type"] == "dir") for r in rows)
    # The console's pages hold the same entries, in git's tree order.
    pages, after = [], None
    while True:
        page, after = s.files.reader.list_page("r", None, "/t", after=after, limit=7)
        pages += page.to_pylist()
        if after is None:
            break
    assert sorted(pages, key=lambda r: r["path"]) == rows


@pytest.mark.parametrize("last", [["h1", "h22", None], ["", "x  ", None], ["é", "", "z"]])
def test_arrow_rows_print_as_the_same_rows_given_as_dicts(capsys, last):
    """The plain text of an Arrow table (padded and joined by Arrow, written as
    its UTF-8 bytes) is that of the same rows as dicts, also where a line's
    last cell is empty or ends in spaces (the line is trimmed) and where
    cells are not ASCII."""
    import pyarrow as pa

    from dpl.cli.fast import FILE_COLUMNS

    rows = [{"path": "/é/ü", "type": "file", "size": 1, "hash": last[0]},
            {"path": "/b", "type": "dir", "size": 2048, "hash": last[1]},
            {"path": "/a  b", "type": None, "size": None, "hash": last[2]}]
    as_arrow = pa.table({k: pa.array([r[k] for r in rows], pa.int64() if k == "size" else pa.string()) for k in rows[0]})
    assert _rendered(capsys, as_arrow, FILE_COLUMNS) == _rendered(capsys, rows, FILE_COLUMNS)
    assert _rendered(capsys, as_arrow.slice(0, 0), FILE_COLUMNS) == b"NAME  TYPE  SIZE  HASH\n"


def test_arrowcompute_calls_the_functions_pyarrow_compute_wraps():
    """Options by position or by name, `and_`, variadic functions, tables as
    data: the same answers as pyarrow.compute's wrappers give."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dpl.storage import arrowcompute

    words = pa.array(["b/x", "a", None, "a/y/z"])
    table = pa.table({"w": words, "n": pa.array([3, 1, 2, 0])})
    for name, args, named in [
        ("split_pattern", (words, "/"), {"max_splits": 1}),
        ("is_in", (words,), {"value_set": pa.array(["a"])}),
        ("and_", (pa.array([True, False]), pa.array([True, True])), {}),
        ("binary_join_element_wise", (words, words, "-"), {}),
        ("sort_indices", (table, [("w", "ascending"), ("n", "descending")]), {}),
        ("take", (table, pa.array([2, 0])), {}),
        ("filter", (table, pa.array([True, False, True, False])), {}),
        ("utf8_rpad", (words,), {"width": 4}),
        ("cast", (pa.array([1, 0], pa.int8()), pa.bool_()), {}),
    ]:
        assert getattr(arrowcompute, name)(*args, **named).equals(getattr(pc, name)(*args, **named)), name
    with pytest.raises(AttributeError):
        arrowcompute.no_such_function
