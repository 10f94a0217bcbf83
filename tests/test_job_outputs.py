"""Job outputs are stored as puts are: a big output file gets chunks of its own."""

from __future__ import annotations

import json
import os

from dpl.engine import Store

KIB = 1 << 10


def store_bytes(root) -> int:
    total = 0
    for dirpath, _, files in os.walk(root / "chunks" / "objects"):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def pipeline(name: str, repo: str, script: str) -> str:
    return json.dumps({"pipeline": {"name": name}, "input": {"pfs": {"repo": repo, "glob": "/"}}, "transform": {"cmd": ["sh", "-c", script]}})


def test_a_big_output_stored_again_by_another_job_grows_the_store_under_one_percent(tmp_path):
    s = Store.init(tmp_path / "store")
    big = os.urandom(1024 * KIB)  # the job records and index layers it adds (~3 KB) stay well under 1% of it
    s.create_repo("data")
    s.put_bytes("data", "master", {"/big.bin": big, "/note.txt": b"x"})
    # The first job writes the big file between small ones of its own, so it
    # sits in the middle of the job's chunk stream.
    s.create_pipeline(pipeline("first", "data", "head -c 5000 /dev/urandom > /pfs/out/a.txt; cp /pfs/data/big.bin /pfs/out/m.bin; "
                                                "head -c 7000 /dev/urandom > /pfs/out/z.txt"))
    s.run_jobs()
    assert s.read_file("first", "master", "/m.bin") == big

    # The second job stores the same bytes among different neighbours.
    before = store_bytes(s.root)
    s.create_pipeline(pipeline("second", "first", "head -c 3000 /dev/urandom > /pfs/out/b.txt; cp /pfs/first/m.bin /pfs/out/m.bin"))
    s.run_jobs()
    assert s.read_file("second", "master", "/m.bin") == big
    grown = store_bytes(s.root) - before - 3000
    assert grown < 0.01 * len(big), f"the store grew by {grown} bytes for a {len(big)}-byte file it already held"
    refs = s.file_row("second", "master", "/m.bin")["refs"]
    assert all(r["offset"] == 0 and r["length"] == len(s.chunks.get(r["chunk"])) for r in refs)  # chunks of its own
