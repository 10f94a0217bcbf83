"""fsck finds each kind of damage and names what it affects; fsck --repair fixes what can be fixed."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from dpl.engine import Store
from dpl.engine.files import plan_sources
from dplcli import dpl

MB = 1 << 20


def put(s: Store, repo: str, dest, src, recursive=False):
    return s.put_files(repo, "master", plan_sources(dest, [str(src)], recursive=recursive))


def object_file(s: Store, oid: bytes) -> str:
    path = s.chunks.local_path(oid)
    os.chmod(path, 0o644)
    return path


def flip_byte(path: str, at: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def fsck_cli(root, *flags):
    proc = dpl("fsck", *flags, store=root, check=False)
    return proc.returncode, proc.stderr.decode() + proc.stdout.decode()


@pytest.fixture
def two_files(tmp_path):
    """A store with /big.bin (6 MiB: chunks are at most 4 MiB, so at least two) and /small.txt in separate commits."""
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    (tmp_path / "big.bin").write_bytes(os.urandom(6 * MB))
    (tmp_path / "small.txt").write_text("small and fine\n")
    put(s, "data", "/big.bin", tmp_path / "big.bin")
    put(s, "data", "/small.txt", tmp_path / "small.txt")
    return s


def test_flipped_byte_missing_chunk_truncated_index_and_dangling_ref_are_each_found_and_named(two_files):
    s = two_files
    root = s.root
    assert fsck_cli(root)[0] == 0
    row = s.file_row("data", "master", "/big.bin")
    damaged, missing = row["refs"][0]["chunk"], row["refs"][1]["chunk"]
    flip_byte(object_file(s, damaged))
    os.unlink(object_file(s, missing))
    head = s.resolve_commit("data", "master")
    # The head's own layer (/small.txt); /big.bin's layer, which the head shares
    # with its parent (small layers are merged only once a commit has several), stays readable.
    truncate(object_file(s, head.delta[0].id))
    db = sqlite3.connect(root / "meta.db")
    db.execute("INSERT INTO branches (repo, name, head, created) VALUES ('data', 'stale', 'feedfacefeedfacefeedfacefeedface', 0)")
    db.commit()
    db.close()

    code, out = fsck_cli(root)
    assert code == 1 and "Traceback" not in out
    report = json.loads(dpl("fsck", "-o", "json", store=root, check=False).stdout)
    kinds = {p["kind"]: p for p in report["problems"]}
    assert set(kinds) == {"damaged-chunk", "missing-chunk", "bad-index", "dangling-ref"}
    assert damaged.hex() in kinds["damaged-chunk"]["message"]
    assert any(a.endswith(":/big.bin") for a in kinds["damaged-chunk"]["affected"])
    assert missing.hex() in kinds["missing-chunk"]["message"]
    assert any(a.endswith(":/big.bin") for a in kinds["missing-chunk"]["affected"])
    assert f"data@{head.id}" in kinds["bad-index"]["affected"]
    assert "data@stale" in kinds["dangling-ref"]["message"]
    assert "/small.txt" not in json.dumps(kinds["damaged-chunk"]) + json.dumps(kinds["missing-chunk"])


def test_repair_re_derives_a_lost_chunk_from_another_copy_of_the_same_bytes(tmp_path):
    s = Store.init(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:02}.txt").write_text(f"file {i} " * 50)
    s.create_repo("a")
    s.create_repo("b")
    put(s, "a", None, src, recursive=True)  # all 50 files share one chunk
    for i in range(50):  # the same bytes, stored again in other chunks
        put(s, "b", f"/copy/f{i:02}.txt", src / f"f{i:02}.txt")
    shared = s.file_row("a", "master", "/f07.txt")["refs"][0]["chunk"]
    os.unlink(object_file(s, shared))
    assert fsck_cli(s.root)[0] == 1

    code, out = fsck_cli(s.root, "--repair")
    assert code == 0, out
    assert f"Re-derived chunk {shared.hex()}" in out
    assert fsck_cli(s.root)[0] == 0
    assert dpl("get-file", "a@master:/f07.txt", store=s.root).stdout == (src / "f07.txt").read_bytes()


def test_repair_quarantines_a_damaged_chunk_it_cannot_rebuild_and_heals_from_the_originals(two_files, tmp_path):
    s = two_files
    row = s.file_row("data", "master", "/big.bin")
    chunk = row["refs"][1]["chunk"]
    flip_byte(object_file(s, chunk), at=5000)

    code, out = fsck_cli(s.root, "--repair")
    assert code == 1
    assert "quarantine" in out and "not fixed" in out and "/big.bin" in out and "--from" in out
    assert (s.root / "quarantine" / chunk.hex()).exists()
    get = dpl("get-file", "data@master:/big.bin", store=s.root, check=False)
    assert get.returncode == 1 and "missing" in get.stderr.decode() and "Traceback" not in get.stderr.decode()
    assert dpl("get-file", "data@master:/small.txt", store=s.root).stdout == b"small and fine\n"

    originals = tmp_path / "originals"
    originals.mkdir()
    os.link(tmp_path / "big.bin", originals / "renamed-anything.bin")
    code, out = fsck_cli(s.root, "--repair", "--from", originals)
    assert code == 0, out
    assert dpl("get-file", "data@master:/big.bin", store=s.root).stdout == (tmp_path / "big.bin").read_bytes()


def test_putting_the_same_bytes_again_restores_a_quarantined_chunk(two_files, tmp_path):
    s = two_files
    chunk = s.file_row("data", "master", "/big.bin")["refs"][-1]["chunk"]
    flip_byte(object_file(s, chunk))
    fsck_cli(s.root, "--repair")
    dpl("put-file", "data@other:/again.bin", tmp_path / "big.bin", store=s.root)
    assert fsck_cli(s.root)[0] == 0
    assert dpl("get-file", "data@master:/big.bin", store=s.root).stdout == (tmp_path / "big.bin").read_bytes()


def compacted_store(tmp_path, commits=12):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    for i in range(commits):
        (tmp_path / "f").write_text(f"version {i}\n")
        put(s, "data", f"/f{i:02}", tmp_path / "f")
    return s


def test_repair_rebuilds_a_compacted_index_from_its_layers(tmp_path):
    s = compacted_store(tmp_path)
    head = s.resolve_commit("data", "master")
    own = {l.id for c in s.list_commits("data", "master") for l in c.delta}
    compacted = [l for l in head.layers if l.id not in own]
    assert compacted, "12 small commits compact their index"
    truncate(object_file(s, compacted[0].id))
    code, out = fsck_cli(s.root)
    assert code == 1 and f"data@{head.id}" in out
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0, out
    assert "Rebuilt the file index" in out
    files = json.loads(dpl("list-file", "data@master", "-o", "json", store=s.root).stdout)
    assert [f["path"] for f in files] == [f"/f{i:02}" for i in range(12)]
    assert dpl("get-file", "data@master:/f03", store=s.root).stdout == b"version 3\n"


def test_repair_rebuilds_a_commits_own_layer_from_its_full_index(tmp_path):
    s = compacted_store(tmp_path)
    history = s.list_commits("data", "master")
    in_full = {l.id for c in history for l in c.layers}
    victim = next(c for c in history if c.delta[0].id not in in_full)  # its own layer lives on only compacted
    truncate(object_file(s, victim.delta[0].id))
    assert fsck_cli(s.root)[0] == 1
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0, out
    assert f"Rebuilt the own file list of commit data@{victim.id}" in out
    s2 = Store.open(s.root)
    assert len(s2.diff_files("data", victim.id).to_pylist()) == 1
    assert s2.get_commit("data", victim.id).delta[0].rows == 1


def test_an_index_with_no_other_source_is_reported_and_its_branch_falls_back(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("data")
    (tmp_path / "a").write_text("a")
    first = put(s, "data", "/a", tmp_path / "a")
    second = put(s, "data", "/b", tmp_path / "a")
    # Every object of its index the first commit does not share (its delta, and a merged layer if it has one).
    own = {l.id for l in second.layers + second.delta} - {l.id for l in first.layers}
    assert own
    for oid in own:
        truncate(object_file(s, oid))
    code, out = fsck_cli(s.root, "--repair")
    assert code == 1
    assert f"back from {second.id}" in out and first.id in out and "not fixed" in out
    assert dpl("get-file", "data@master:/a", store=s.root).stdout == b"a"


def test_repair_moves_a_dangling_branch_back_to_its_newest_valid_commit(two_files):
    s = two_files
    head = s.resolve_commit("data", "master")
    db = sqlite3.connect(s.root / "meta.db")
    db.execute("DELETE FROM commits WHERE id=?", (head.id,))
    db.commit()
    db.close()
    code, out = fsck_cli(s.root)
    assert code == 1 and "data@master" in out and head.id in out
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0, out
    assert "Moved branch data@master" in out
    assert dpl("get-file", "data@master:/big.bin", store=s.root).returncode == 0


def test_leftovers_of_killed_writers_are_notes_not_problems_and_repair_removes_them(two_files):
    s = two_files
    stray = os.path.join(s.chunks.tmp, f"{'ab' * 16}.999999.1")
    with open(stray, "wb") as f:
        f.write(b"half an object")
    code, out = fsck_cli(s.root)
    assert code == 0 and "left by a killed process" in out
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0 and "Removed 1 temporary file" in out
    assert not os.path.exists(stray)


def test_repair_of_a_healthy_store_changes_nothing(two_files):
    s = two_files
    before = sqlite3.connect(s.root / "meta.db").execute("SELECT * FROM commits ORDER BY id").fetchall()
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0 and "fixed:" not in out and "consistent" in out
    assert sqlite3.connect(s.root / "meta.db").execute("SELECT * FROM commits ORDER BY id").fetchall() == before


def test_an_object_a_killed_gc_moved_aside_is_put_back(two_files):
    s = two_files
    chunk = s.file_row("data", "master", "/big.bin")["refs"][0]["chunk"]
    os.makedirs(s.chunks.trash, exist_ok=True)
    os.rename(s.chunks.local_path(chunk), os.path.join(s.chunks.trash, f"{chunk.hex()}.999999"))  # gc killed mid-delete
    code, out = fsck_cli(s.root)
    assert code == 1 and "missing" in out and "interrupted gc" in out
    code, out = fsck_cli(s.root, "--repair")
    assert code == 0 and "Put back 1 object" in out, out
    assert dpl("get-file", "data@master:/big.bin", store=s.root).returncode == 0
