"""Layered file indexes read back exactly what a replay of the writes gives.

The index merges layers by binary search and zero-copy slices when a layer
is small next to what it lands on, and by a sort otherwise; both must agree
with the plain meaning of the layers: newest wins, a tombstone deletes a
path (or, ending in `/`, a directory) from older layers only.
"""

from __future__ import annotations

import bisect
import os

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpl.storage import index
from dpl.storage.errors import Corruption

# Paths that sort around "/" on purpose: "/a!" < "/a/" < "/a0", and non-ASCII.
NAMES = ["/a", "/a!", "/a0", "/a/x", "/a/y", "/a/b/z", "/b", "/b/x", "/é", "/é/x", "/z"]
DIRS = ["/a/", "/a/b/", "/b/", "/é/", "/"]

row = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.integers(1, 9), st.just(False)),
    st.tuples(st.sampled_from(NAMES + DIRS), st.just(0), st.just(True)),
)
layer = st.lists(row, max_size=8).map(lambda rows: list({p: (p, s, d) for p, s, d in rows}.values()))


def table(rows) -> pa.Table:
    rows = [(p, s, d) for p, s, d in rows if d or not p.endswith("/")]
    return index.make_table(
        [p for p, _, _ in rows], [s for _, s, _ in rows], [bytes([s]) * 16 for _, s, _ in rows], [[]] * len(rows),
        [d for _, _, d in rows],
    )


def replay(layers) -> dict:
    state: dict[str, int] = {}
    for rows in layers:
        t = table(rows)
        for p, dead in zip(t["path"].to_pylist(), t["deleted"].to_pylist()):
            if dead:
                for q in [q for q in state if q == p or (p.endswith("/") and q.startswith(p))]:
                    del state[q]
        for p, s, dead in zip(t["path"].to_pylist(), t["size"].to_pylist(), t["deleted"].to_pylist()):
            if not dead:
                state[p] = s
    return state


def as_dict(t: pa.Table) -> dict:
    paths = t["path"].to_pylist()
    assert paths == sorted(paths), "a merged table is sorted by path"
    assert len(paths) == len(set(paths))
    return dict(zip(paths, t["size"].to_pylist()))


def big_base(n: int = 3000) -> list:
    """A big first layer, so that small layers take the binary-search path."""
    return [(f"/a/big{i:05d}", 1, False) for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.lists(layer, min_size=1, max_size=5), st.booleans())
def test_merge_agrees_with_a_replay(layers, with_big_base):
    if with_big_base:
        layers = [big_base()] + layers
    tables = [table(rows) for rows in layers]
    expected = replay(layers)
    assert as_dict(index.merge(tables)) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(layer, min_size=1, max_size=5), st.booleans(), st.sampled_from(NAMES + ["/a/big00007"]),
       st.sampled_from(["/", "/a", "/a/", "/a/b", "/é", "/b"]))
def test_lookup_and_under_agree_with_a_replay(layers, with_big_base, path, prefix):
    if with_big_base:
        layers = [big_base()] + layers
    tables = [table(rows) for rows in layers]
    expected = replay(layers)
    assert as_dict(index.lookup(tables, [path])) == {p: s for p, s in expected.items() if p == path}
    directory = prefix.rstrip("/") + "/"
    want = {p: s for p, s in expected.items() if p.startswith(directory) or (p == prefix and not prefix.endswith("/"))}
    assert as_dict(index.under(tables, prefix)) == (expected if prefix == "/" else want)


@settings(max_examples=100, deadline=None)
@given(st.lists(layer, min_size=2, max_size=6), st.integers(0, 4))
def test_merging_a_run_of_layers_keeps_the_meaning(layers, start):
    """Compaction merges trailing layers with their tombstones kept."""
    start = min(start, len(layers) - 1)
    tables = [table(rows) for rows in layers]
    tail = index.merge(tables[start:], keep_tombstones=start > 0)
    assert as_dict(index.merge(tables[:start] + [tail])) == replay(layers)


def test_one_row_over_a_big_layer_is_sliced_not_copied():
    base = table(big_base(5000))
    merged = index.merge([base, table([("/a/big00010", 7, False), ("/a/big00020", 0, True)])])
    assert merged.num_rows == 4999
    assert merged["size"].to_pylist()[10] == 7
    # Zero-copy: the big layer's rows come back as slices of its own buffers.
    assert merged["path"].num_chunks > 1


def clashes(state: dict, added: set) -> set:
    """(file, path beneath it) pairs of a final state that involve an added path."""
    paths, out = sorted(state), set()
    for p in paths:
        i = bisect.bisect_left(paths, p + "/")
        while i < len(paths) and paths[i].startswith(p + "/"):
            if p in added or paths[i] in added:
                out.add((p, paths[i]))
            i += 1
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(layer, min_size=0, max_size=3), st.lists(layer, min_size=1, max_size=2), st.booleans())
def test_path_collision_finds_exactly_the_file_and_directory_clashes_a_delta_makes(base, delta, with_big_base):
    base = ([big_base()] if with_big_base else []) + base
    final = replay(base + delta)
    added = set(as_dict(index.merge([table(rows) for rows in delta])))
    expected = clashes(final, added)
    found = index.path_collision([table(rows) for rows in base], [table(rows) for rows in delta])
    assert (found is not None) == bool(expected)
    if found:
        assert found[1].startswith(found[0] + "/") and found[0] in final and found[1] in final


def test_commits_landing_before_their_parents_compaction_keep_a_bounded_index(tmp_path, monkeypatch):
    """Racing writers land on parents whose compaction has not run yet; no
    commit's index may grow past MAX_LAYERS (it once grew by one layer per
    racing commit, and every landing read them all)."""
    from dpl.engine import Store
    from dpl.engine.commits import Commits

    monkeypatch.setattr(Commits, "compact", lambda self, repo, cid: None)  # every parent's compaction lost the race
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    n = 3 * index.MAX_LAYERS
    for i in range(n):
        s.put_bytes("r", "master", {f"/f{i:02d}": b"%d" % i})
    head = s.resolve_commit("r", "master")
    assert len(head.layers) <= index.MAX_LAYERS
    assert s.list_files("r", "master")["path"].to_pylist() == [f"/f{i:02d}" for i in range(n)]
    assert s.read_file("r", "master", "/f07") == b"7"


def test_compaction_rewrites_few_rows_a_commit_however_long_the_branch():
    """1-row commits, one after another, as plan_compaction folds them: each
    row is rewritten O(log n) times and no index passes MAX_LAYERS.  A forced
    fold that did not take in its older neighbours once left a stack the
    tiered rule could not reach (1583, 609, 233, then a layer that grew by
    each fold) and rewrote hundreds of rows a commit."""
    from dpl.storage.layer import Layer

    for fold_to in (index.MAX_LAYERS, index.MAX_LAYERS // 2):
        layers: list[Layer] = []
        rewritten = 0
        n = 20_000
        for _ in range(n):
            layers = layers + [Layer(b"x", 1)]
            plan = index.plan_compaction(layers, fold_to=fold_to)
            if plan is not None:
                start, end = plan
                assert end == len(layers)
                rows = sum(l.rows for l in layers[start:end])
                rewritten += rows
                layers = layers[:start] + [Layer(b"x", rows)]
            assert len(layers) <= index.MAX_LAYERS
        assert sum(l.rows for l in layers) == n
        assert rewritten / n < 15, (fold_to, rewritten / n, [l.rows for l in layers])


def test_a_mapped_layer_is_kept_while_its_file_is_and_let_go_when_it_is_not(tmp_path):
    """A layer past MMAP_FROM is memory-mapped; the cache keeps the mapped
    table (mapping it again cost every commit on a big repo ~0.3 ms), checked
    against its file like any other, and drops it once the file is gone."""
    from dpl.storage.local import LocalChunkStore

    store = LocalChunkStore.create(str(tmp_path / "chunks"), durable=False)
    n = 20_000
    built = table(big_base(n))
    layer = index.write_layer(store, built)
    path = store.local_path(layer.id)
    assert os.path.getsize(path) >= index.MMAP_FROM
    assert index._layers.get(store, layer.id) is None  # one built in memory is not held: its rows are ours
    first = index.load_layer(store, layer)
    assert first.num_rows == n and index.load_layer(store, layer) is first
    assert index.read_layer(store, layer) is first
    os.chmod(path, 0o644)
    os.remove(path)
    assert index._layers.get(store, layer.id) is None
    assert not any(key[1] == layer.id for key in index._layers._entries)
    with pytest.raises(Corruption):
        index.load_layer(store, layer)
