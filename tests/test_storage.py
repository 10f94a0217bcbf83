"""Storage guarantees: dedup, atomic commits under SIGKILL, fsck, layered indexes."""

from __future__ import annotations

import json
import os
import random
import signal
import time


from dpl.engine import Store
from dpl.engine.files import plan_sources
from dplcli import dpl, popen

MB = 1 << 20


def store_bytes(root) -> int:
    total = 0
    for dirpath, _, files in os.walk(root / "chunks" / "objects"):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def test_identical_bytes_are_stored_once_across_commits_branches_and_repos(tmp_path):
    s = Store.init(tmp_path / "store")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(100 * MB))
    s.create_repo("a")
    s.create_repo("b")
    s.put_files("a", "master", plan_sources("/one.bin", [str(data)], recursive=False))
    first = store_bytes(s.root)
    assert first >= 100 * MB
    s.put_files("a", "master", plan_sources("/copy.bin", [str(data)], recursive=False))
    s.put_files("a", "dev", plan_sources("/x.bin", [str(data)], recursive=False))
    s.put_files("b", "master", plan_sources("/y.bin", [str(data)], recursive=False))
    assert store_bytes(s.root) - first < 0.01 * first
    assert s.read_file("b", "master", "/y.bin") == data.read_bytes()


def test_one_byte_edit_in_a_big_file_stores_under_two_percent_new_bytes(tmp_path):
    s = Store.init(tmp_path / "store")
    # Seeded bytes: where FastCDC cuts random bytes varies, and a rare late
    # resync would cost more than the bound (see test_uploads.py).
    rng = random.Random(41)
    big = bytearray(b"".join(rng.randbytes(MB) for _ in range(256)))
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    s.create_repo("a")
    s.put_files("a", "master", plan_sources("/big.bin", [str(src)], recursive=False))
    before = store_bytes(s.root)
    big[128 * MB] ^= 0xFF
    src.write_bytes(big)
    s.put_files("a", "master", plan_sources("/big.bin", [str(src)], recursive=False))
    assert store_bytes(s.root) - before < 0.02 * 256 * MB
    assert s.read_file("a", "master", "/big.bin") == bytes(big)
    assert s.read_file("a", "master^", "/big.bin")[128 * MB] == big[128 * MB] ^ 0xFF


def test_small_files_share_chunks(tmp_path):
    s = Store.init(tmp_path / "store")
    src = tmp_path / "small"
    src.mkdir()
    for i in range(2000):
        (src / f"{i:05}.txt").write_bytes(os.urandom(500))
    s.create_repo("a")
    s.put_files("a", "master", plan_sources(None, [str(src)], recursive=True))
    objects = sum(len(f) for _, _, f in os.walk(s.root / "chunks" / "objects"))
    assert objects < 10  # ~1 MB of data: one or two chunks plus the index


def test_a_big_file_put_again_in_any_company_grows_the_store_under_one_percent(tmp_path):
    s = Store.init(tmp_path / "store")
    big = os.urandom(20 * MB)
    src = tmp_path / "mixed"
    src.mkdir()
    for i in range(300):  # small files on both sides of it, written to the same stream
        (src / f"a{i:03}.txt").write_bytes(os.urandom(1000))
        (src / f"z{i:03}.txt").write_bytes(os.urandom(1000))
    (src / "m.bin").write_bytes(big)
    for repo in ("one", "two", "three"):
        s.create_repo(repo)
    s.put_files("one", "master", plan_sources(None, [str(src)], recursive=True))

    before = store_bytes(s.root)
    s.put_files("two", "master", plan_sources("/m.bin", [str(src / "m.bin")], recursive=False))
    assert store_bytes(s.root) - before < 0.01 * len(big)  # alone, in another repo

    other = tmp_path / "other"
    other.mkdir()
    for i in range(200):
        (other / f"b{i:03}.txt").write_bytes(os.urandom(3000))
    (other / "m.bin").write_bytes(big)
    before = store_bytes(s.root)
    s.put_files("three", "master", plan_sources(None, [str(other)], recursive=True))
    assert store_bytes(s.root) - before - 200 * 3000 < 0.01 * len(big)  # in other company

    refs = s.file_row("one", "master", "/m.bin")["refs"]
    assert all(r["offset"] == 0 and r["length"] == len(s.chunks.get(r["chunk"])) for r in refs)  # chunks of its own
    assert s.read_file("two", "master", "/m.bin") == big and s.read_file("three", "master", "/m.bin") == big


def make_tree(root, n_files=20000, n_big=3):
    root.mkdir()
    for d in range(20):
        (root / f"d{d:02}").mkdir()
    for i in range(n_files):
        (root / f"d{i % 20:02}" / f"f{i:06}").write_bytes(os.urandom(256))
    for i in range(n_big):
        (root / f"big{i}.bin").write_bytes(os.urandom(20 * MB))


def test_sigkill_during_put_leaves_branch_unchanged_and_store_readable(tmp_path):
    root = tmp_path / "store"
    dpl("init", root)
    dpl("create-repo", "data", store=root)
    dpl("put-file", "data@master:/before.txt", "-", input=b"committed", store=root)
    tree = tmp_path / "tree"
    make_tree(tree)
    head = json.loads(dpl("inspect-commit", "data@master", "-o", "json", store=root).stdout)["id"]
    outcomes = []
    for delay in (0.05, 0.3, 0.8, 1.5, 3.0):
        proc = popen("put-file", "data@master", tree, "-r", store=root)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = json.loads(dpl("inspect-commit", "data@master", "-o", "json", store=root).stdout)
        if now["id"] == head:
            outcomes.append("unchanged")
        else:  # the put finished before the kill: the commit must be whole
            assert now["files"] == 20000 + 3 + 1 and now["parent"] == head
            outcomes.append("complete")
            head = now["id"]
        assert dpl("get-file", "data@master:/before.txt", store=root).stdout == b"committed"
        fsck = dpl("fsck", "-o", "json", store=root, check=False)
        assert fsck.returncode == 0, fsck.stdout.decode()
    assert "unchanged" in outcomes  # at least one kill landed mid-write
    dpl("put-file", "data@master", tree, "-r", store=root)
    assert json.loads(dpl("inspect-commit", "data@master", "-o", "json", store=root).stdout)["files"] == 20004


def test_fsck_names_the_file_whose_chunk_was_corrupted(tmp_path):
    root = tmp_path / "store"
    dpl("init", root)
    dpl("create-repo", "data", store=root)
    (tmp_path / "victim.bin").write_bytes(os.urandom(9 * MB))  # chunks are at most 4 MiB: at least three
    (tmp_path / "other.txt").write_text("fine")
    dpl("put-file", "data@master:/models/victim.bin", tmp_path / "victim.bin", store=root)
    dpl("put-file", "data@master:/other.txt", tmp_path / "other.txt", store=root)
    assert dpl("fsck", store=root).returncode == 0
    s = Store.open(root)
    row = s.file_row("data", "master", "/models/victim.bin")
    chunk = row["refs"][1]["chunk"]
    path = s.chunks.local_path(chunk)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    proc = dpl("fsck", store=root, check=False)
    err = proc.stdout.decode()  # the report goes to stdout
    assert proc.returncode != 0
    assert chunk.hex() in err and "/models/victim.bin" in err and "/other.txt" not in err
    # Reading the damaged file fails loudly instead of returning wrong bytes.
    get = dpl("get-file", "data@master:/models/victim.bin", store=root, check=False)
    assert get.returncode != 0 and "damaged" in get.stderr.decode()


def test_a_commit_on_a_big_head_writes_only_its_own_rows(tmp_path):
    s = Store.init(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5000):
        (src / f"{i:05}").write_bytes(b"x")
    s.create_repo("a")
    base = s.put_files("a", "master", plan_sources(None, [str(src)], recursive=True))
    (tmp_path / "one").write_text("1")
    for i in range(30):
        c = s.put_files("a", "master", plan_sources(f"/new/{i}", [str(tmp_path / "one")], recursive=False))
        # The 5000-row base layer is shared, never rewritten by small commits.
        assert c.layers[0] == base.layers[0]
        assert len(c.layers) <= 8
    assert c.nfiles == 5030
    assert s.list_files("a", "master", "/", recursive=True).num_rows == 5030


WRITER = """
import sys
from dpl.engine import Store
from dpl.engine.files import Source
root, w, n, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = Store.open(root)
for i in range(n):
    for name in ("a", "b"):
        with open(f"{tmp}/w{w}-{name}", "w") as f:
            f.write(f"{w}:{i}:{name}")
    s.put_files("data", "master", [Source(f"{tmp}/w{w}-a", f"/w{w}/{i:03}/a"), Source(f"{tmp}/w{w}-b", f"/w{w}/{i:03}/b")],
                description=f"{w}:{i}")
"""

READER = """
import sys, time, random
from dpl.engine import Store
root, stop = sys.argv[1], sys.argv[2]
import os
s = Store.open(root)
seen = 0
while not os.path.exists(stop) or seen == 0:
    try:
        commit = s.resolve_commit("data", "master")
    except Exception as e:
        if "no commits yet" in str(e) or "neither a branch" in str(e):  # before the first commit lands
            continue
        raise
    table = s.commit_table(commit)
    paths = table["path"].to_pylist()
    assert len(paths) == commit.nfiles, (len(paths), commit.nfiles)
    have = set(paths)
    for p in paths:  # every commit is two files: never one without the other
        other = p[:-1] + ("b" if p.endswith("a") else "a")
        assert other in have, f"half a commit: {p} without {other}"
    for p in random.sample(paths, min(5, len(paths))):
        w, i, name = p.split("/")[1:]
        assert s.read_file("data", commit.id, p) == f"{w[1:]}:{int(i)}:{name}".encode()
    seen += 1
    time.sleep(0.02)  # look often, without starving the writers of CPU on a small machine
print(seen)
"""


def test_concurrent_writers_lose_no_commit_and_readers_see_whole_commits(tmp_path):
    """8 processes put 100 commits each into one branch while 2 others read it."""
    import subprocess
    import sys

    writers, commits = 8, 100
    root = tmp_path / "store"
    dpl("init", "--no-fsync", root)  # durability is not what this is about; the lock is
    dpl("create-repo", "data", store=root)
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(root), str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(w), str(commits), str(tmp_path)], stderr=subprocess.PIPE)
        for w in range(writers)
    ]
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()
    stop.touch()
    for r in readers:
        out, err = r.communicate()
        assert r.returncode == 0, err.decode()
        assert int(out) > 0

    s = Store.open(root)
    every = {c.id: c for c in s.list_commits("data")}
    history = s.list_commits("data", "master")
    assert len(every) == len(history) == writers * commits  # none lost, none off the branch
    for newer, older in zip(history, history[1:]):
        assert newer.parent == older.id and newer.finished >= older.finished  # one line, in order
    assert history[-1].parent is None
    assert [c.nfiles for c in reversed(history)] == list(range(2, 2 * writers * commits + 1, 2))
    order: dict[int, list[int]] = {}
    for c in reversed(history):
        w, i = map(int, c.description.split(":"))
        order.setdefault(w, []).append(i)
    assert order == {w: list(range(commits)) for w in range(writers)}  # each writer's commits in the order it made them
    assert s.commit_table(history[0]).num_rows == 2 * writers * commits
    assert s.read_file("data", "master", "/w7/099/b") == b"7:99:b"
