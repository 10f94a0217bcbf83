"""The S3 object store, against a real S3 server (SeaweedFS, see conftest)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from dplcli import dpl, popen

pytestmark = pytest.mark.s3

MB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def s3_store(s3_server, tmp_path):
    """A store whose chunks live under a fresh prefix of the session's bucket."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    root = tmp_path / "store"
    dpl("init", root, "--object-store", f"s3://{s3_server.bucket}/{prefix}")
    dpl("create-repo", "data", store=root)
    return root, prefix


def bucket_objects(server, prefix) -> dict[str, int]:
    """Key -> size of every object under `prefix`."""
    out, request = {}, {"Bucket": server.bucket, "Prefix": prefix + "/"}
    client = server.client()
    while True:
        page = client.list_objects_v2(**request)
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
        if not page.get("IsTruncated"):
            return out
        request["ContinuationToken"] = page["NextContinuationToken"]


def local_bytes(root, exclude=("cache",)) -> int:
    total = 0
    for dirpath, dirnames, files in os.walk(root):
        if os.path.relpath(dirpath, root) == ".":
            dirnames[:] = [d for d in dirnames if d not in exclude]
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def head(root, branch="master"):
    proc = dpl("inspect-commit", f"data@{branch}", "-o", "json", store=root, check=False)
    return json.loads(proc.stdout)["id"] if proc.returncode == 0 else None


def test_put_and_get_round_trip_keeps_the_bytes_in_the_bucket(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(24 * MB))
    for i in range(200):
        (src / "sub" / f"{i}.txt").write_text(f"file {i}\n" * (i + 1))
    dpl("put-file", "data@master", src, "-r", store=root)

    assert dpl("get-file", "data@master:/big.bin", store=root).stdout == (src / "big.bin").read_bytes()
    assert dpl("get-file", "data@master:/sub/7.txt", store=root).stdout == b"file 7\n" * 8
    objects = bucket_objects(s3_server, prefix)
    assert sum(objects.values()) >= 24 * MB
    assert all(k.startswith(f"{prefix}/objects/") and len(k.split("/")[-2]) == 2 for k in objects)
    # Only metadata and the read cache live under the store directory.
    assert not (root / "chunks").exists()
    assert local_bytes(root) < 2 * MB

    # Without the cache every read comes from the bucket.
    subprocess.run(["rm", "-rf", str(root / "cache")], check=True)
    out = tmp_path / "out"
    dpl("get-file", "data@master:/", "-o", out, "-r", store=root)
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert sorted(os.listdir(out / "sub")) == sorted(os.listdir(src / "sub"))
    assert dpl("fsck", store=root).returncode == 0


def test_identical_bytes_are_uploaded_once(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(32 * MB))
    dpl("put-file", "data@master:/one.bin", data, store=root)
    first = sum(bucket_objects(s3_server, prefix).values())
    dpl("put-file", "data@master:/copy.bin", data, store=root)
    dpl("put-file", "data@dev:/x.bin", data, store=root)
    subprocess.run(["rm", "-rf", str(root / "cache")], check=True)  # dedup must not rely on the cache
    dpl("put-file", "data@dev:/y.bin", data, store=root)
    assert sum(bucket_objects(s3_server, prefix).values()) - first < 0.01 * first
    assert hashlib.sha256(dpl("get-file", "data@dev:/y.bin", store=root).stdout).digest() == hashlib.sha256(data.read_bytes()).digest()


def test_the_read_cache_stays_within_its_bound(s3_server, tmp_path):
    root = tmp_path / "store"
    dpl("init", root, "--object-store", f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:12]}", "--cache-size", "16M")
    assert json.loads((root / "config.json").read_text())["cache_bytes"] == 16 * MB
    dpl("create-repo", "data", store=root)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(64 * MB))
    dpl("put-file", "data@master:/data.bin", data, store=root)
    assert dpl("get-file", "data@master:/data.bin", store=root).stdout == data.read_bytes()
    assert local_bytes(root / "cache", exclude=()) <= 16 * MB


def test_fsck_checks_the_bucket_not_the_cache(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    (tmp_path / "victim.bin").write_bytes(os.urandom(3 * MB))
    (tmp_path / "other.txt").write_text("fine")
    dpl("put-file", "data@master:/models/victim.bin", tmp_path / "victim.bin", store=root)
    dpl("put-file", "data@master:/other.txt", tmp_path / "other.txt", store=root)
    assert dpl("fsck", store=root).returncode == 0

    from dpl.engine import Store

    s = Store.open(root)
    chunk = s.file_row("data", "master", "/models/victim.bin")["refs"][1]["chunk"]
    s.close()
    key = f"{prefix}/objects/{chunk.hex()[:2]}/{chunk.hex()[2:]}"
    client = s3_server.client()
    body = bytearray(client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())
    body[1000] ^= 1
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=bytes(body))  # the cached copy is still good

    proc = dpl("fsck", store=root, check=False)
    err = proc.stdout.decode()  # the report goes to stdout
    assert proc.returncode != 0
    assert chunk.hex() in err and "/models/victim.bin" in err and "/other.txt" not in err


def test_an_unreachable_server_is_one_sentence_and_changes_nothing(s3_server, s3_store, tmp_path):
    root, _ = s3_store
    (tmp_path / "f").write_bytes(os.urandom(3 * MB))
    dpl("put-file", "data@master:/kept", tmp_path / "f", store=root)
    before = head(root)
    (tmp_path / "g").write_bytes(os.urandom(3 * MB))
    nowhere = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "DPL_S3_RETRY_SECONDS": "2"}
    proc = dpl("put-file", "data@master:/new", tmp_path / "g", store=root, env=nowhere, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err
    assert err.startswith("error: The object store at s3://") and "could not be reached" in err
    assert head(root) == before
    assert dpl("get-file", "data@master:/kept", store=root).stdout == (tmp_path / "f").read_bytes()


def test_gc_deletes_unreferenced_objects_from_the_bucket(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    (tmp_path / "keep.bin").write_bytes(os.urandom(4 * MB))
    (tmp_path / "drop.bin").write_bytes(os.urandom(12 * MB))
    dpl("put-file", "data@master:/keep.bin", tmp_path / "keep.bin", store=root)
    dpl("create-repo", "scratch", store=root)
    dpl("put-file", "scratch@master:/drop.bin", tmp_path / "drop.bin", store=root)
    before = sum(bucket_objects(s3_server, prefix).values())
    dpl("delete-repo", "scratch", store=root)
    # The default grace period keeps what was written minutes ago, by the bucket's clock.
    said = dpl("gc", store=root).stdout.decode()
    assert sum(bucket_objects(s3_server, prefix).values()) == before, said
    dpl("gc", "--grace", "0", store=root)
    assert before - sum(bucket_objects(s3_server, prefix).values()) >= 12 * MB
    subprocess.run(["rm", "-rf", str(root / "cache")], check=True)
    assert dpl("get-file", "data@master:/keep.bin", store=root).stdout == (tmp_path / "keep.bin").read_bytes()
    assert dpl("fsck", store=root).returncode == 0


@pytest.mark.parametrize(
    "url, env, needle",
    [
        ("s3://no-such-bucket-for-dpl/x", {}, "does not exist"),
        ("s3://{bucket}/x", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "refused the credentials"),
        ("s3://x/y", {}, "not a valid S3 bucket name"),
        ("gs://bucket/x", {}, "not supported"),
    ],
)
def test_init_checks_the_object_store(s3_server, tmp_path, url, env, needle):
    proc = dpl("init", tmp_path / "store", "--object-store", url.format(bucket=s3_server.bucket), env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and needle in err and "Traceback" not in err
    assert not (tmp_path / "store" / "config.json").exists()


def _wait_for_upload(s3_server, prefix, proc, objects):
    deadline = time.monotonic() + 120
    while len(bucket_objects(s3_server, prefix)) < objects and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the put finished before the server went away"


@pytest.mark.slow
def test_a_server_restart_during_a_big_put_retries_or_fails_cleanly(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    dpl("put-file", "data@master:/before.txt", "-", input=b"committed", store=root)
    before = head(root)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(300):
            f.write(os.urandom(MB))
    proc = popen("put-file", "data@master:/big.bin", big, store=root)
    _wait_for_upload(s3_server, prefix, proc, 40)  # restart once the upload is well under way
    s3_server.restart(down=1.0)
    out, err = proc.communicate(timeout=600)
    err = err.decode()
    print(f"put-file across the restart: exit {proc.returncode}, {err.strip() or out.decode().strip()}")
    assert "Traceback" not in err
    if proc.returncode == 0:
        assert head(root) != before
        got = dpl("get-file", "data@master:/big.bin", store=root, timeout=600).stdout
        assert hashlib.sha256(got).digest() == hashlib.sha256(big.read_bytes()).digest()
    else:
        assert err.startswith("error: ") and len(err.strip().splitlines()) <= 2, err
        assert "object store" in err
        assert head(root) == before
    assert dpl("get-file", "data@master:/before.txt", store=root).stdout == b"committed"
    fsck = dpl("fsck", "-o", "json", store=root, check=False, timeout=600)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["ok"], fsck.stdout.decode()


@pytest.mark.slow
def test_a_server_gone_longer_than_the_retries_fails_in_one_sentence_and_changes_nothing(s3_server, s3_store, tmp_path):
    root, prefix = s3_store
    dpl("put-file", "data@master:/before.txt", "-", input=b"committed", store=root)
    before = head(root)
    environ = dict(os.environ, DPL_STORE=str(root), DPL_S3_RETRY_SECONDS="3")
    # The file comes from stdin, so the put cannot end before the server is
    # gone (a 150 MB file from disk once reached the bucket in 0.2 s, first).
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dpl"), "put-file", "data@master:/big.bin", "-"],
                            env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(40):
        proc.stdin.write(os.urandom(MB))
    proc.stdin.flush()
    _wait_for_upload(s3_server, prefix, proc, 20)
    s3_server.stop()
    try:
        started = time.monotonic()
        try:
            for _ in range(40):  # the rest of the file, while the put finds the server gone
                proc.stdin.write(os.urandom(MB))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it gave up before reading it all
        proc.stdin = None
        _, err = proc.communicate(timeout=300)
        gave_up_after = time.monotonic() - started
    finally:
        s3_server.start()
    err = err.decode()
    print(f"put-file with the server gone: exit {proc.returncode} after {gave_up_after:.1f} s, {err.strip()}")
    assert proc.returncode != 0 and "Traceback" not in err
    assert err.startswith("error: The object store at s3://") and "could not be reached" in err
    assert len(err.strip().splitlines()) == 2 and err.strip().splitlines()[1].startswith("hint: ")
    assert gave_up_after < 60, f"gave up only after {gave_up_after:.0f} s"
    assert head(root) == before
    assert dpl("get-file", "data@master:/before.txt", store=root).stdout == b"committed"
    fsck = dpl("fsck", "-o", "json", store=root, check=False, timeout=600)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["ok"], fsck.stdout.decode()


@pytest.mark.slow
def test_the_repo_suite_passes_on_s3(s3_server):
    """tests/test_repos.py, unchanged, with every store on S3 (see the `store` fixture): embedded
    and served.  Its PostgreSQL variant is left out here (-m): that is a second metadata backend,
    not a second object store, and S3 with PostgreSQL is what test_postgres.py's two machines and
    test_export.py share; it was 40% of this test's ten minutes in CI."""
    env = dict(os.environ, DPL_TEST_OBJECT_STORE=f"s3://{s3_server.bucket}/suite-{uuid.uuid4().hex[:8]}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not postgres", os.path.join(HERE, "test_repos.py")],
        cwd=os.path.dirname(HERE),
        env=env,
        capture_output=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout.decode()[-4000:] + proc.stderr.decode()[-2000:]


def test_gc_with_a_grace_period_deletes_only_objects_older_than_it(s3_server, s3_store, tmp_path, monkeypatch):
    from dpl.engine import Store, gc

    root, prefix = s3_store
    (tmp_path / "old.bin").write_bytes(os.urandom(3 * MB))
    (tmp_path / "new.bin").write_bytes(os.urandom(5 * MB))
    dpl("create-repo", "scratch", store=root)
    dpl("put-file", "scratch@master:/old.bin", tmp_path / "old.bin", store=root)
    old_done = time.time()
    time.sleep(5)
    new_start = time.time()
    dpl("put-file", "scratch@master:/new.bin", tmp_path / "new.bin", store=root)
    dpl("delete-repo", "scratch", store=root)
    before = bucket_objects(s3_server, prefix)
    monkeypatch.setattr(gc, "S3_CLOCK_SLACK", 0.0)  # server and test share this machine's clock
    s = Store.open(root)
    try:
        # A grace period that reaches 2.5 s before new.bin's put began, however
        # long the commands took on a loaded machine: its objects (stamped to
        # the second) are younger, old.bin's (5 s before) older.
        grace = time.time() - new_start + 2.5
        assert new_start - 2.5 > old_done
        report = gc.collect_garbage(s, grace_minutes=grace / 60)
    finally:
        s.close()
    after = bucket_objects(s3_server, prefix)
    freed = sum(before.values()) - sum(after.values())
    assert report.objects >= 1 and report.young >= 1
    assert 3 * MB <= freed < 5 * MB and freed == report.bytes
    assert dpl("fsck", store=root).returncode == 0


def _empty_prefix(server, bucket, prefix) -> None:
    client = server.client()
    request = {"Bucket": bucket, "Prefix": prefix + "/"}
    while True:
        page = client.list_objects_v2(**request)
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        if not page.get("IsTruncated"):
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


@pytest.mark.parametrize("how", ["emptied", "recreated"])
def test_a_store_on_a_bucket_emptied_behind_an_old_cache_uploads_everything(s3_server, tmp_path, how):
    """Issue 13: a Ray worker's cache is keyed by the s3:// address alone, so a
    cache can outlive the bucket behind that address.  What it holds must
    never make a put skip an upload."""
    bucket = f"dpl-re-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/p"
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(5 * MB))
    for i in range(50):
        (src / f"{i}.txt").write_text(f"small {i}\n")
    first = tmp_path / "first"
    dpl("init", first, "--object-store", url)
    dpl("create-repo", "data", store=first)
    dpl("put-file", "data@master", src, "-r", store=first)

    _empty_prefix(s3_server, bucket, "p")
    if how == "recreated":
        client.delete_bucket(Bucket=bucket)
        client.create_bucket(Bucket=bucket)
    again = tmp_path / "again"  # a new store on the same address, with the first one's cache
    shutil.copytree(first / "cache", again / "cache")
    dpl("init", again, "--object-store", url)
    dpl("create-repo", "data", store=again)
    dpl("put-file", "data@master", src, "-r", store=again)

    fsck = dpl("fsck", "-o", "json", store=again, check=False)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["ok"], fsck.stdout.decode()
    shutil.rmtree(again / "cache")
    assert dpl("get-file", "data@master:/big.bin", store=again).stdout == (src / "big.bin").read_bytes()


def test_gc_between_two_writes_of_one_process_loses_no_chunk(s3_server, s3_store, tmp_path):
    """A long-lived process (a Ray worker, a server) writes the same bytes
    before and after a gc that deleted them: the second write uploads them."""
    from dpl.engine import Store
    from dpl.engine.files import plan_sources

    root, _ = s3_store
    data = tmp_path / "f.bin"
    data.write_bytes(os.urandom(3 * MB))
    small = tmp_path / "s.txt"
    small.write_text("small and gone")
    s = Store.open(root)
    try:
        s.create_repo("scratch")
        s.put_files("scratch", "master", plan_sources(None, [str(data), str(small)], recursive=False))
        dpl("delete-repo", "scratch", store=root)
        dpl("gc", "--grace", "0", store=root)
        s.put_files("data", "master", plan_sources(None, [str(data), str(small)], recursive=False))
    finally:
        s.close()
    fsck = dpl("fsck", "-o", "json", store=root, check=False)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["ok"], fsck.stdout.decode()
    shutil.rmtree(root / "cache")
    assert dpl("get-file", "data@master:/f.bin", store=root).stdout == data.read_bytes()
    assert dpl("get-file", "data@master:/s.txt", store=root).stdout == b"small and gone"
