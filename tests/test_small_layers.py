"""Small index layers (storage/smalllayer.py): written and landed without
pyarrow, read by everything as the same Arrow table, checked against their
id; stores whose layers are all Arrow files stay readable and writable."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from dpl.engine import Store
from dpl.engine.sources import plan_sources
from dpl.engine.uploads import put_small
from dpl.storage import index, smalllayer
from dpl.storage.errors import Corruption, PathCollision
from test_diskfull import small_disk  # noqa: F401  (a fixture: a 24 MiB tmpfs)


def rows_of(s, repo, ref="master"):
    return s.list_files(repo, ref, recursive=True).to_pylist()


def test_a_small_put_stores_what_the_chunker_would(tmp_path):
    """The same files put both ways: the same rows, chunk ids included, and one chunk object."""
    src = tmp_path / "src"
    src.mkdir()
    files = {"a.txt": b"alpha\n", "b.txt": b"beta\n" * 1000, "same.txt": b"alpha\n", "empty": b"", "z.bin": bytes(range(256)) * 100}
    for name, data in files.items():
        (src / name).write_bytes(data)
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("lean")
    s.create_repo("full")
    plans = plan_sources("/d/", [str(src / n) for n in files], recursive=False)
    lean = put_small(s, "lean", "master", plans, description="lean")
    assert lean is not None and lean.nfiles == 5 and lean.size == sum(map(len, files.values()))
    full = s.put_files("full", "master", plans, description="full")
    assert (full.nfiles, full.size) == (lean.nfiles, lean.size)
    got, want = rows_of(s, "lean"), rows_of(s, "full")
    assert got == want and {r["path"] for r in got} == {f"/d/{n}" for n in files}
    chunks = {ref["chunk"] for r in s.commit_table(lean).to_pylist() for ref in r["refs"]}
    assert s.commit_table(lean).to_pylist() == s.commit_table(full).to_pylist()
    assert len(chunks) == 1  # the distinct contents, end to end, in one chunk
    assert s.read_file("lean", "master", "/d/same.txt") == b"alpha\n"
    assert s.read_file("lean", "master", "/d/z.bin") == files["z.bin"]
    layer = lean.delta[0]
    with open(s.chunks.local_path(layer.id), "rb") as f:
        assert f.read(len(smalllayer.MAGIC)) == smalllayer.MAGIC


def test_a_small_put_declines_what_it_does_not_do(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (300 << 10))
    small = tmp_path / "small"
    small.write_bytes(b"y")
    assert put_small(s, "r", "master", plan_sources("/big", [str(big)], recursive=False)) is None
    assert put_small(s, "r", "master", plan_sources("/", [str(tmp_path)], recursive=True)) is None
    s.start_commit("r", "master")
    assert put_small(s, "r", "master", plan_sources("/s", [str(small)], recursive=False)) is None  # joins the open commit elsewhere
    assert s.inspect_branch("r", "master")["head"] is None  # nothing landed


def test_layers_of_the_old_format_stay_readable_and_take_small_commits(tmp_path):
    """A commit whose layers are Arrow files (as every store before the small
    format): read, landed on, collision-checked and compacted as before."""
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    old = s.put_bytes("r", "master", {f"/o/f{i}": b"%d" % i for i in range(5)})
    # Rewrite its layer as an Arrow IPC file and point the commit at it.
    table = index.read_layer(s.chunks, old.layers[0])
    arrow = index.Layer(index.write_table(s.chunks, table), table.num_rows)
    from dpl.storage.metadata import commits as commit_rows

    with s.db.write() as tx:
        commit_rows.set_layers(tx, "r", old.id, [arrow])
        commit_rows.set_delta(tx, "r", old.id, [arrow])
    with open(s.chunks.local_path(arrow.id), "rb") as f:
        assert f.read(6) == b"ARROW1"
    assert [r["path"] for r in rows_of(s, "r")] == [f"/o/f{i}" for i in range(5)]
    one = tmp_path / "one"
    one.write_bytes(b"one")
    c = put_small(s, "r", "master", plan_sources("/o/f1", [str(one)], recursive=False))
    assert (c.nfiles, c.size) == (5, 4 + 3)
    assert s.read_file("r", "master", "/o/f1") == b"one"
    with pytest.raises(PathCollision):
        put_small(s, "r", "master", plan_sources("/o/f2/under", [str(one)], recursive=False))
    for i in range(12):
        s.put_bytes("r", "master", {f"/n{i}": b"n"})
    head = s.resolve_commit("r", "master")
    assert len(head.layers) <= index.MAX_LAYERS and head.nfiles == 17
    assert len(rows_of(s, "r")) == 17


def test_a_damaged_small_layer_is_reported_not_read(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    c = s.put_bytes("r", "master", {"/a": b"a", "/b": b"b"})
    layer = c.layers[0]
    path = s.chunks.local_path(layer.id)
    data = open(path, "rb").read()
    i = data.index(b'"/b"') + 2
    os.chmod(path, 0o644)
    with open(path, "wb") as f:  # still valid JSON, another path: only the id check sees it
        f.write(data[:i] + b"c" + data[i + 1:])
    index._small._entries.clear()
    index._layers._entries.clear()
    with pytest.raises(Corruption) as e:
        index.read_layer(s.chunks, layer)
    assert "dpl fsck" in e.value.hint
    with pytest.raises(Corruption):
        index.read_table(s.chunks, layer.id)


def _random_layer(rng: random.Random, names: list[str], deletes: bool) -> list[smalllayer.Row]:
    rows = {}
    for _ in range(rng.randint(1, 6)):
        p = rng.choice(names)
        if deletes and rng.random() < 0.3:
            p = p if rng.random() < 0.5 else p.rsplit("/", 1)[0] + "/"
            if p == "/":
                continue
            rows[p] = smalllayer.Row(p, 0, bytes(16), (), True)
        else:
            rows[p] = smalllayer.Row(p, rng.randint(0, 9), bytes([rng.randint(0, 255)]) * 16, ())
    return [rows[p] for p in sorted(rows)]


def test_a_small_layer_read_back_is_the_layer_written_and_compacts_to_the_same_bytes():
    """A layer read back keeps its stored entries and makes Rows on demand:
    its rows, lookups and ranges are those written, and merging read-back
    layers writes the bytes merging the written ones would."""
    names = ["/a", "/a/b", "/a/b/c", "/a/d", "/b", "/b/x", "/c/y/z", "/c/y", "/é", "/\udcff"]
    rng = random.Random(7)
    for _ in range(100):
        written = [smalllayer.SmallLayer(_random_layer(rng, names, deletes=i > 0)) for i in range(rng.randint(1, 4))]
        read = []
        for layer in written:
            data = smalllayer.encode(layer)
            back = smalllayer.decode(index.object_id(data), data)
            assert smalllayer.encode(back) == data
            for p in names:
                assert back.find(p) == layer.find(p) and back.range(p + "/", p + "0") == layer.range(p + "/", p + "0")
            assert back.dir_tombstones() == layer.dir_tombstones() and back.rows == layer.rows
            read.append(smalllayer.decode(index.object_id(data), data))  # fresh: no Rows made yet
        for keep in (False, True):
            merged = smalllayer.merge_stored(read, keep_tombstones=keep)
            assert merged.rows == smalllayer.merge(written, keep_tombstones=keep)
            assert smalllayer.encode(merged) == smalllayer.encode(smalllayer.SmallLayer(smalllayer.merge(written, keep_tombstones=keep)))


@pytest.mark.parametrize("listed_rows", [0, index.RowView.LISTED_ROWS])
def test_small_layer_algorithms_agree_with_the_arrow_ones(monkeypatch, listed_rows):
    """Merging, lookups, collisions and file counts over random layers, both
    ways (a RowView searching its table by probes, or as a list of paths)."""
    monkeypatch.setattr(index.RowView, "LISTED_ROWS", listed_rows)
    names = ["/a", "/a/b", "/a/b/c", "/a/d", "/b", "/b/x", "/c/y/z", "/c/y", "/é"]
    rng = random.Random(12)
    for _ in range(300):
        base = [smalllayer.SmallLayer(_random_layer(rng, names, deletes=i > 0)) for i in range(rng.randint(0, 3))]
        delta = [smalllayer.SmallLayer(_random_layer(rng, names, deletes=True))]
        tb, td = [index.to_table(l) for l in base], [index.to_table(l) for l in delta]
        for keep in (False, True):
            assert [r.path for r in smalllayer.merge(base + delta, keep_tombstones=keep)] == \
                index.merge(tb + td, keep_tombstones=keep)["path"].to_pylist()
        assert smalllayer.path_collision(base, delta) == index.path_collision(tb, td)
        # The base's layers as Arrow tables read by binary search (a commit of a few files on a big base)
        viewed = [index.RowView(t) for t in tb]
        assert smalllayer.path_collision(viewed, delta) == index.path_collision(tb, td)
        merged = {r.path: r for r in smalllayer.merge(base)}
        for p in names:
            row = smalllayer.lookup(base, p)
            assert (row.path if row else None) == (p if p in merged else None)
            assert [r.path for r in smalllayer.under(base, p + "/")] == index.under(tb, p + "/")["path"].to_pylist()
        size, nfiles = sum(r.size for r in merged.values()), len(merged)
        after = {r.path: r for r in smalllayer.merge(base + delta)}
        assert smalllayer.stats_after(size, nfiles, base, delta) == (sum(r.size for r in after.values()), len(after))
        assert smalllayer.stats_after(size, nfiles, viewed, delta) == (sum(r.size for r in after.values()), len(after))
        for p in names:
            for view, layer in zip(viewed, base):
                assert view.find(p) == layer.find(p) and view.has_prefix(p + "/") == layer.has_prefix(p + "/")
                assert view.range(p + "/", p + "0") == layer.range(p + "/", p + "0")


def test_a_one_file_put_file_imports_neither_pyarrow_nor_numpy(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    s.put_bytes("r", "master", {"/x/old.txt": b"old"})
    one = tmp_path / "one.txt"
    one.write_bytes(b"one\n")
    code = ("import sys; sys.argv = ['dpl', 'put-file', 'r@master:/x/one.txt', sys.argv[1]]\nfrom dpl.cli import run\nrun()\n"
            "print(sorted(m for m in ('typer', 'click', 'pyarrow', 'numpy', 'pyfastcdc') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(one)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DPL_STORE=str(s.root)))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[-1] == "[]" and "committed r@" in out.stderr
    assert s.read_file("r", "master", "/x/one.txt") == b"one\n" and s.resolve_commit("r", "master").nfiles == 2


def test_a_small_put_on_a_full_disk_fails_in_one_sentence_and_leaves_the_branch_as_it_was(small_disk, tmp_path):
    """The pyarrow-free put path answers a full disk as put_files does."""
    from dplcli import dpl
    from test_diskfull import assert_one_sentence, free_bytes

    disk = small_disk  # test_diskfull's tmpfs (skipped where it cannot be mounted)
    store = disk / "store"
    dpl("init", store)
    dpl("create-repo", "data", store=store)
    kept = tmp_path / "kept.txt"
    kept.write_bytes(b"committed before")
    dpl("put-file", "data@master:/kept.txt", kept, store=store)
    head = dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(200 << 10))  # under SMALL_BYTES: the small path
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free_bytes(disk) - (64 << 10)))
    before = free_bytes(disk)
    assert_one_sentence(dpl("put-file", "data@master:/small.bin", small, store=store, check=False))
    assert free_bytes(disk) >= before - (16 << 10)
    os.unlink(filler)
    assert dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout == head
    assert dpl("fsck", store=store, check=False).returncode == 0
    dpl("put-file", "data@master:/small.bin", small, store=store)
    assert dpl("get-file", "data@master:/small.bin", store=store).stdout == small.read_bytes()
