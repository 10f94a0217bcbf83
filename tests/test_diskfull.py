"""A disk that runs out of space: one clear sentence, nothing half-committed, usable once space is back."""

from __future__ import annotations

import os
import subprocess

import pytest

from dplcli import dpl

MB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (mounting needs root; elsewhere the test is skipped)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def assert_one_sentence(proc):
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.startswith("error: The disk holding the store is full; nothing was committed.\n"), err
    assert len(err.strip().splitlines()) <= 2  # the sentence and a hint


def test_put_file_on_a_full_disk_fails_in_one_sentence_and_the_store_stays_usable(small_disk, tmp_path):
    store = small_disk / "store"
    dpl("init", store)
    dpl("create-repo", "data", store=store)
    dpl("put-file", "data@master:/kept.txt", "-", input=b"committed before", store=store)
    head = dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * MB))  # more than the disk holds
    before = free_bytes(small_disk)

    assert_one_sentence(dpl("put-file", "data@master:/big.bin", big, store=store, check=False))
    assert free_bytes(small_disk) >= before - MB  # the failed put took back what it had stored
    assert dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout == head
    assert dpl("fsck", store=store, check=False).returncode == 0
    assert os.listdir(store / "chunks" / "tmp") == []

    # A disk filled by something else: the put fails wherever it runs out, the
    # metadata database included; once space is back, the same put works.
    filler = small_disk / "filler"
    for keep in (8 << 10, 2 * MB):  # the metadata database runs out; a chunk write does
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free_bytes(small_disk) - keep))
        medium = tmp_path / "medium.bin"
        medium.write_bytes(os.urandom(4 * MB))
        assert_one_sentence(dpl("put-file", "data@master:/medium.bin", medium, store=store, check=False))
        os.unlink(filler)
        assert dpl("fsck", store=store, check=False).returncode == 0
        assert dpl("inspect-commit", "data@master", "-o", "json", store=store).stdout == head
    dpl("put-file", "data@master:/medium.bin", medium, store=store)
    assert dpl("get-file", "data@master:/medium.bin", store=store).stdout == medium.read_bytes()
    assert dpl("get-file", "data@master:/kept.txt", store=store).stdout == b"committed before"
    assert dpl("fsck", store=store, check=False).returncode == 0
