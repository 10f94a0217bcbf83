"""gc deletes every object nothing refers to, and none that something does, even beside writers."""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from dpl.engine import Store
from dpl.engine.files import Source, plan_sources
from dpl.engine.fsck import fsck
from dpl.engine.gc import collect_garbage, live_objects
from dpl.storage.chunkstore import ChunkStore
from dplcli import dpl, popen

MB = 1 << 20
COPY = {
    "pipeline": {"name": "copy"},
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
    "transform": {"cmd": ["sh", "-c", "cp -r /pfs/data/* /pfs/out/"]},
}


def stored(s: Store) -> set[bytes]:
    return set(s.chunks.iterate())


def every_file(s: Store) -> dict:
    """Bytes of every file of every commit (reads verify every chunk's hash)."""
    out = {}
    for c in s.db.query("SELECT repo, id FROM commits WHERE state='finished'"):
        _, table = s.file_table(c["repo"], c["id"])
        for p in table["path"].to_pylist():
            out[(c["repo"], c["id"], p)] = s.read_file(c["repo"], c["id"], p)
    return out


def make_tree(root, rng: random.Random, files=300, big=0):
    root.mkdir()
    for i in range(files):
        (root / f"f{i:04}.txt").write_bytes(rng.randbytes(rng.randint(10, 3000)))
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(big))
    return root


def test_gc_deletes_exactly_the_unreferenced_objects(tmp_path):
    rng = random.Random(1)
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    s.create_repo("scratch")
    tree = make_tree(tmp_path / "tree", rng, big=3 * MB)
    s.put_files("data", "master", plan_sources(None, [str(tree)], recursive=True))
    s.create_pipeline(json.dumps(COPY))
    s.run_jobs()
    s.put_files("scratch", "master", plan_sources(None, [str(make_tree(tmp_path / "junk", rng, big=2 * MB))], recursive=True))
    (tmp_path / "one").write_bytes(rng.randbytes(5000))
    s.put_files("data", "master", [Source(str(tmp_path / "one"), "/f0000.txt")])  # a new version: the old one stays referenced
    s.run_jobs()
    s.start_commit("data", "dev")
    (tmp_path / "draft").write_bytes(rng.randbytes(70000))
    s.put_files("data", "dev", [Source(str(tmp_path / "draft"), "/draft.bin")])  # an open commit's data is live
    s.delete_repo("scratch")
    hour_ago = time.time() - 3600
    for oid, _, _ in s.chunks.ages():  # as if written an hour ago: older than the grace periods below
        os.utime(s.chunks.local_path(oid), (hour_ago, hour_ago))
    before = every_file(s)
    live = live_objects(s)
    garbage = stored(s) - live
    assert garbage, "deleting a repo leaves garbage"

    kept = json.loads(dpl("gc", "--grace", "90", "-o", "json", store=s.root).stdout)  # all younger than 90 minutes
    assert kept["objects"] == 0 and kept["young"] == len(garbage)
    dry = json.loads(dpl("gc", "--grace", "0", "--dry-run", "-o", "json", store=s.root).stdout)
    assert dry["objects"] == len(garbage) and stored(s) - live == garbage

    report = json.loads(dpl("gc", "--grace", "0", "-o", "json", store=s.root).stdout)
    assert report["objects"] == len(garbage) and report["bytes"] > 2 * MB
    assert stored(s) == live
    assert every_file(s) == before
    s.finish_commit("data", "dev")
    assert s.read_file("data", "dev", "/draft.bin") == (tmp_path / "draft").read_bytes()
    assert fsck(s).ok
    # Jobs still carry datum outputs forward from what gc kept.
    s.put_files("data", "master", [Source(str(tmp_path / "one"), "/new.txt")])
    [job] = s.run_jobs()
    assert job["state"] == "success" and job["processed"] == 1
    assert s.read_file("copy", "master", "/f0001.txt") == (tree / "f0001.txt").read_bytes()


class _GcMidWrite:
    """A chunk store that runs `action` once, after the writer's `after`-th put."""

    def __init__(self, inner, after: int, action):
        self.inner, self.after, self.action, self.puts = inner, after, action, 0

    def put(self, oid, data):
        result = self.inner.put(oid, data)
        self.puts += 1
        if self.puts == self.after:
            self.action()
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("pause", [0.0, 3.0], ids=["reused-garbage", "long-running-writer"])
def test_gc_in_the_middle_of_a_put_never_takes_the_writers_chunks(tmp_path, pause):
    """The race that matters, made to happen: gc runs (no grace period) while a
    writer holds chunks no commit refers to yet: old garbage it reused (saved
    by the mtime refresh of a reused object), or chunks it wrote a while ago
    (saved by the writer registry)."""
    rng = random.Random(2)
    s = Store.init(tmp_path / "store")
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        (tree / f"part{i}.bin").write_bytes(rng.randbytes(2 * MB))
    s.create_repo("old")
    s.put_files("old", "master", plan_sources(None, [str(tree)], recursive=True))
    s.delete_repo("old")  # every chunk of the tree is garbage now, and old enough to go
    for path in s.chunks.ages():
        os.utime(s.chunks.local_path(path[0]), (time.time() - 3600, time.time() - 3600))
    freed = []

    def gc_now():
        time.sleep(pause)
        freed.append(collect_garbage(Store.open(s.root), grace_minutes=0))

    s.create_repo("new")
    writer = Store.open(s.root)
    writer.chunks = _GcMidWrite(writer.chunks, after=4, action=gc_now)  # before its parts are built: they take it
    writer.put_files("new", "master", plan_sources(None, [str(tree)], recursive=True))
    assert freed and freed[0].young > 0
    for i in range(8):
        assert s.read_file("new", "master", f"/part{i}.bin") == (tree / f"part{i}.bin").read_bytes()
    assert fsck(s).ok


def test_gc_running_beside_a_concurrent_put_file_leaves_a_readable_commit(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "store"
    dpl("init", root)
    s = Store.open(root)
    tree = make_tree(tmp_path / "tree", rng, files=500, big=8 * MB)
    expect = {f"/{p.name}": p.read_bytes() for p in tree.iterdir()}
    s.create_repo("old")
    s.put_files("old", "master", plan_sources(None, [str(tree)], recursive=True))
    s.delete_repo("old")
    s.create_repo("new")
    writer = popen("put-file", "new@master", tree, "-r", store=root)
    runs = 0
    while writer.poll() is None or runs == 0:
        collect_garbage(s, grace_minutes=0)
        runs += 1
    assert writer.wait() == 0, writer.stderr.read().decode()
    assert {p: s.read_file("new", "master", p) for p in expect} == expect
    assert fsck(s).ok
    collect_garbage(s, grace_minutes=0)
    assert stored(s) == live_objects(s) and fsck(s).ok


def test_gc_removes_what_killed_writers_left(tmp_path):
    s = Store.init(tmp_path / "store")
    stray = os.path.join(s.chunks.tmp, f"{'cd' * 16}.999999.7")
    with open(stray, "wb") as f:
        f.write(b"x" * 1000)
    scratch = s.root / "tmp" / "jobs" / "p-0123456789ab-deadbeef"
    scratch.mkdir(parents=True)
    (scratch / "junk").write_bytes(b"y")
    report = collect_garbage(s, grace_minutes=0)
    assert report.temp_files == 1 and report.temp_bytes == 1000 and report.scratch_dirs == 1
    assert not os.path.exists(stray) and not scratch.exists()


class _Ageless(ChunkStore):
    """A chunk store that cannot tell an object's age at all: the interface's
    defaults for every maintenance capability."""

    def __init__(self, inner):
        self.inner = inner

    def put(self, oid, data):
        return self.inner.put(oid, data)

    def get(self, oid):
        return self.inner.get(oid)

    def has(self, oid):
        return self.inner.has(oid)

    def delete(self, oid):
        self.inner.delete(oid)

    def iterate(self):
        return self.inner.iterate()

    def sync(self):
        self.inner.sync()


def test_on_a_store_without_ages_gc_deletes_only_while_nothing_writes(tmp_path):
    from dpl.engine import writers

    s = Store.init(tmp_path / "store")
    s.create_repo("keep")
    s.create_repo("drop")
    (tmp_path / "f").write_bytes(os.urandom(MB))
    s.put_files("keep", "master", [Source(str(tmp_path / "f"), "/f")])
    (tmp_path / "g").write_bytes(os.urandom(MB))
    s.put_files("drop", "master", [Source(str(tmp_path / "g"), "/g")])
    s.delete_repo("drop")
    garbage = stored(s) - live_objects(s)
    s.chunks = _Ageless(s.chunks)
    other = Store.open(s.root)
    with writers.writing(other):  # a writer is at work: nothing may go
        report = collect_garbage(s, grace_minutes=0)
    assert report.objects == 0 and report.young == len(garbage) and "writing" in report.notes[0]
    assert collect_garbage(s, grace_minutes=5).objects == 0  # a grace period cannot be honoured
    assert collect_garbage(s, grace_minutes=0).objects == len(garbage)
    assert stored(s) == live_objects(s) and fsck(s).ok
