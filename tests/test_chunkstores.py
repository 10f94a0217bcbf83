"""One contract for every chunk store: local, in-memory, S3 and the read cache over them.

Each case is opened through the registry by URL, as a store opens it, and
comes with a way to reopen it (another process's view of the same objects)
and to damage the stored copy behind dpl's back.  The S3 cases run against
the real SeaweedFS of tests/services (skipped locally without it, failing
in CI).  Below the contract: the registry's errors, and what issue 13 asks
of the cache (it never stands in for the bucket).
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest

from dpl.storage import chunkstore, registry
from dpl.storage.cache import CachedStore
from dpl.storage.chunkstore import fanout, object_id
from dpl.storage.errors import Corruption, DplError, StorageUnavailable, StoreNotFound
from dpl.storage.local import LocalChunkStore

KB = 1 << 10
MB = 1 << 20


@dataclass
class Case:
    store: object
    reopen: Callable[[], object]  # a new store object on the same objects
    damage: Callable[[bytes], None]  # flip a byte of the stored copy, behind dpl's back
    bucket: tuple | None = None  # (server, bucket, prefix) for S3 cases


def _flip_file(path: str) -> None:
    os.chmod(path, 0o644)  # objects are written read-only
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))


def _local(tmp_path, request) -> Case:
    url = str(tmp_path / "elsewhere")  # a directory path, as `dpl init --object-store /DIR` takes
    registry.open_chunk_store(url, tmp_path, {}, create=True)
    return Case(
        registry.open_chunk_store(url, tmp_path, {}),
        lambda: registry.open_chunk_store(url, tmp_path, {}),
        lambda oid: _flip_file(os.path.join(url, "objects", fanout(oid))),
    )


def _memory(tmp_path, request) -> Case:
    url = f"memory://{uuid.uuid4().hex}"
    store = registry.open_chunk_store(url, tmp_path, {}, create=True)

    def damage(oid):
        data = bytearray(store.objects[oid])
        data[0] ^= 1
        store.objects[oid] = bytes(data)

    return Case(store, lambda: registry.open_chunk_store(url, tmp_path, {}), damage)


def _s3(tmp_path, request, cache_bytes: int) -> Case:
    server = request.getfixturevalue("s3_server")
    prefix = f"c-{uuid.uuid4().hex[:12]}"
    url = f"s3://{server.bucket}/{prefix}"
    options = {"cache_bytes": cache_bytes}
    client = server.client()

    def damage(oid):
        key = f"{prefix}/objects/{fanout(oid)}"
        body = bytearray(client.get_object(Bucket=server.bucket, Key=key)["Body"].read())
        body[0] ^= 1
        client.put_object(Bucket=server.bucket, Key=key, Body=bytes(body))

    store = registry.open_chunk_store(url, tmp_path, options, create=True)
    return Case(store, lambda: registry.open_chunk_store(url, tmp_path, options), damage, (server, server.bucket, prefix))


def _cached_local(tmp_path, request) -> Case:
    """The cache is a wrapper over any store, not only S3."""
    inner = _local(tmp_path, request)

    def wrap(store):
        return CachedStore(store, str(tmp_path / "cache"), 64 * MB)

    return Case(wrap(inner.store), lambda: wrap(inner.reopen()), inner.damage)


CASES = {
    "local": _local,
    "memory": _memory,
    "cached-local": _cached_local,
    "s3": lambda tmp_path, request: _s3(tmp_path, request, cache_bytes=0),
    "cached-s3": lambda tmp_path, request: _s3(tmp_path, request, cache_bytes=64 * MB),
}


@pytest.fixture(
    params=[
        "local",
        "memory",
        "cached-local",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("cached-s3", marks=pytest.mark.s3),
    ]
)
def case(request, tmp_path) -> Case:
    return CASES[request.param](tmp_path, request)


def blob(size: int) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return object_id(data), data


# ------------------------------------------------------------------ contract


def test_put_then_get_has_and_iterate_agree(case):
    small, big = blob(3 * KB), blob(3 * MB)  # on each side of S3's HEAD-before-PUT size
    for oid, _ in (small, big):
        assert not case.store.has(oid)
    for oid, data in (small, big):
        assert case.store.put(oid, memoryview(data)) is True
    case.store.sync()
    for oid, data in (small, big):
        assert case.store.has(oid)
        assert case.store.get(oid) == data
    assert set(case.store.iterate()) == {small[0], big[0]}


def test_putting_an_object_twice_stores_it_once(case):
    oid, data = blob(200 * KB)
    assert case.store.put(oid, data) is True
    assert case.store.put(oid, data) is False  # a write that repeats a chunk
    case.store.sync()
    case.store.put(oid, data)  # a later write: the answer may come from a check, never a second copy
    case.store.sync()
    assert list(case.store.iterate()) == [oid]
    assert case.reopen().get(oid) == data


def test_a_missing_object_is_a_clear_error(case):
    oid, _ = blob(KB)
    with pytest.raises(Corruption) as e:
        case.store.get(oid)
    assert oid.hex() in e.value.message and "missing" in e.value.message and "fsck" in e.value.hint
    assert not case.store.has(oid)
    case.store.delete(oid)  # deleting what is not there is not an error


def test_deleted_objects_are_gone_for_every_reader(case):
    keep, drop = blob(100 * KB), blob(100 * KB)
    for oid, data in (keep, drop):
        case.store.put(oid, data)
    case.store.sync()
    assert case.store.get(drop[0]) == drop[1]  # read once: a cache now holds it
    case.store.delete(drop[0])
    for store in (case.store, case.reopen()):
        assert not store.has(drop[0])
        with pytest.raises(Corruption):
            store.get(drop[0])
        assert set(store.iterate()) == {keep[0]}
        assert store.get(keep[0]) == keep[1]


def test_synced_objects_are_there_for_another_opener(case):
    objects = dict(blob(size) for size in [1, 10 * KB, 70 * KB, 1 * MB] * 10)
    for oid, data in objects.items():
        case.store.put(oid, data)
    case.store.sync()
    other = case.reopen()
    assert set(other.iterate()) == set(objects)
    chunkstore.prefetch(other, list(objects))
    assert all(other.get(oid) == data for oid, data in objects.items())


def test_scan_shows_damaged_stored_bytes(case):
    good, bad = blob(100 * KB), blob(100 * KB)
    for oid, data in (good, bad):
        case.store.put(oid, data)
    case.store.sync()
    assert case.store.get(bad[0]) == bad[1]  # a cache keeps its good copy...
    case.damage(bad[0])
    scanned = dict(chunkstore.scan(case.store))  # ...but fsck sees what is stored
    assert scanned.keys() == {good[0], bad[0]}
    assert object_id(scanned[good[0]]) == good[0]
    assert object_id(scanned[bad[0]]) != bad[0]


def test_a_local_path_when_offered_holds_the_object(case):
    oid, data = blob(500 * KB)
    case.store.put(oid, data)
    case.store.sync()
    path = case.reopen().local_path(oid)
    if path is not None:
        with open(path, "rb") as f:
            assert f.read() == data


def test_the_fan_out_names_every_object_the_same_way():
    oid = bytes(range(16))
    assert fanout(oid) == "00/0102030405060708090a0b0c0d0e0f"
    assert chunkstore.unfan(fanout(oid)) == oid
    assert chunkstore.unfan("00/0102030405060708090a0b0c0d0e0f.123.456") is None  # a temporary file


# ------------------------------------------------------------------ registry


def test_the_registry_opens_each_kind_by_url(tmp_path):
    assert type(registry.open_chunk_store("local", tmp_path, {}, create=True)) is LocalChunkStore
    assert (tmp_path / "chunks" / "objects" / "ff").is_dir()  # the embedded default's layout
    assert registry.normalize("rel/dir") == os.path.abspath("rel/dir")
    assert registry.normalize(None) == "local"
    store = registry.open_chunk_store(f"file://{tmp_path}/shared", tmp_path, {}, create=True)
    assert store.root == f"{tmp_path}/shared"
    with pytest.raises(StoreNotFound) as e:
        registry.open_chunk_store(str(tmp_path / "nowhere"), tmp_path, {})
    assert "holds no chunk store" in e.value.message


def test_an_unknown_scheme_names_the_ones_there_are(tmp_path):
    with pytest.raises(StoreNotFound) as e:
        registry.open_chunk_store("gs://bucket/x", tmp_path, {})
    assert "not supported" in e.value.message and "s3://" in e.value.hint and "memory://" in e.value.hint


def test_a_missing_backend_dependency_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # how Python hides an installed module
    monkeypatch.delitem(sys.modules, "dpl.storage.s3", raising=False)
    with pytest.raises(StorageUnavailable) as e:
        registry.open_chunk_store("s3://bucket/prefix", tmp_path, {})
    assert e.value.message == "The s3 object store needs boto3 (not installed)."
    assert e.value.hint == "pip install 'dpl[s3]'"
    assert isinstance(e.value, DplError)


def test_a_local_store_does_not_import_remote_backends(tmp_path):
    import subprocess

    code = (
        "import sys; from dpl.storage import registry; "
        f"registry.open_chunk_store('local', {str(tmp_path)!r}, {{}}, create=True); "
        "print(sorted(m for m in sys.modules if m.startswith(('boto3', 'dpl.storage.s3', 'dpl.storage.cache'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------- the cache never stands in for the store


def _cached(tmp_path, request) -> Case:
    return _s3(tmp_path, request, cache_bytes=64 * MB)


def _bucket_keys(server, bucket, prefix) -> dict[str, bytes]:
    client = server.client()
    out, request = {}, {"Bucket": bucket, "Prefix": prefix + "/"}
    while True:
        page = client.list_objects_v2(**request)
        for item in page.get("Contents", ()):
            out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        if not page.get("IsTruncated"):
            return out
        request["ContinuationToken"] = page["NextContinuationToken"]


def _empty(server, bucket, prefix) -> None:
    client = server.client()
    for key in _bucket_keys(server, bucket, prefix):
        client.delete_object(Bucket=bucket, Key=key)


def _assert_in_bucket(server, bucket, prefix, objects) -> None:
    held = _bucket_keys(server, bucket, prefix)
    assert {key: held.get(key) for key in (f"{prefix}/objects/{fanout(o)}" for o in objects)} == {
        f"{prefix}/objects/{fanout(o)}": d for o, d in objects.items()
    }


@pytest.mark.s3
@pytest.mark.parametrize("who", ["the same process", "a new process with the old cache"])
def test_after_the_bucket_was_wiped_putting_again_lands_the_bytes(tmp_path, request, who):
    case = _cached(tmp_path, request)
    server, bucket, prefix = case.bucket
    objects = dict([blob(3 * KB), blob(300 * KB), blob(2 * MB)])  # small ones are sent, big ones asked about
    for oid, data in objects.items():
        case.store.put(oid, data)
    case.store.sync()
    assert all(case.store.get(oid) == data for oid, data in objects.items())  # all cached now
    _empty(server, bucket, prefix)  # deleted behind dpl's back

    store = case.store if who == "the same process" else case.reopen()
    assert not any(store.has(oid) for oid in objects)  # the cache is no proof
    for oid, data in objects.items():
        store.put(oid, data)
    store.sync()
    _assert_in_bucket(server, bucket, prefix, objects)


@pytest.mark.s3
def test_after_the_bucket_was_recreated_putting_again_lands_the_bytes(tmp_path, s3_server):
    bucket = f"dpl-re-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    url, options = f"s3://{bucket}/p", {"cache_bytes": 64 * MB}
    store = registry.open_chunk_store(url, tmp_path, options, create=True)
    objects = dict([blob(3 * KB), blob(1 * MB)])
    for oid, data in objects.items():
        store.put(oid, data)
    store.sync()
    _empty(s3_server, bucket, "p")
    client.delete_bucket(Bucket=bucket)
    client.create_bucket(Bucket=bucket)  # same address, a new (empty) bucket behind it

    for opened in (store, registry.open_chunk_store(url, tmp_path, options)):
        for oid, data in objects.items():
            opened.put(oid, data)
        opened.sync()
        _assert_in_bucket(s3_server, bucket, "p", objects)
        _empty(s3_server, bucket, "p")


def test_a_damaged_cache_copy_is_fetched_again(tmp_path, request):
    case = _cached_local(tmp_path, request)
    oid, data = blob(300 * KB)
    case.store.put(oid, data)
    case.store.sync()
    cached = case.store.cache.path(oid)
    assert os.path.exists(cached)
    _flip_file(cached)
    other = case.reopen()
    assert other.get(oid) == data
    path = other.local_path(oid)
    with open(path, "rb") as f:
        assert f.read() == data
