"""The S3 gateway: a real `dpl serve --s3` process, driven by boto3, s3fs and DuckDB's httpfs.

One server is shared by the module (each test uses repos of its own names).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dplcli import DPL

pytestmark = pytest.mark.timeout(120)

ACCESS, SECRET = "dpl-test-key", "dpl-test-secret-0123456789"


class Gateway:
    """`dpl serve --s3 127.0.0.1:0` on `store`, with a key pair; the gateway's address comes from its log."""

    def __init__(self, store, tmp_path, *, keys: bool = True):
        self.store, self.log = store, tmp_path / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DPL_ADDRESS", "DPL_S3_"))}
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
        if keys:  # the gateway's own key pair; without it, only users' token keys sign
            env.update(DPL_S3_ACCESS_KEY=ACCESS, DPL_S3_SECRET_KEY=SECRET)
        self.proc = subprocess.Popen([DPL, "serve", "--listen", "127.0.0.1:0", "--s3", "127.0.0.1:0", "--store", str(store),
                                      "--poll", "0.5"], env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        self.url = _address(self.log, self.proc)

    def client(self, access: str = ACCESS, secret: str = SECRET, **config):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=access, aws_secret_access_key=secret,
                            region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _address(log, proc) -> str:
    """The gateway's address, from its `s3.listening` log line."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"s3.listening"' in line:
                return json.loads(line)["address"]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("the S3 gateway did not start:\n" + log.read_text())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from dpl.engine import Store

    tmp = tmp_path_factory.mktemp("s3gw")
    store = Store.init(tmp / "store", durable=False)
    gw = Gateway(store.root, tmp)
    gw.engine = store
    yield gw
    gw.stop()


def _error(call) -> tuple[str, int]:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _du(root) -> int:
    """Bytes of the store's objects (chunks and index layers), the metadata database aside."""
    total = 0
    for where, _, names in os.walk(root):
        total += sum(os.path.getsize(os.path.join(where, n)) for n in names if not n.startswith("meta"))
    return total


def test_put_get_range_head_and_errors(gateway):
    s3 = gateway.client()
    s3.create_bucket(Bucket="master.photos")
    put = s3.put_object(Bucket="master.photos", Key="a/b.txt", Body=b"hello, gateway")
    got = s3.get_object(Bucket="master.photos", Key="a/b.txt")
    assert got["Body"].read() == b"hello, gateway" and got["ETag"] == put["ETag"]
    part = s3.get_object(Bucket="master.photos", Key="a/b.txt", Range="bytes=7-13")
    assert part["Body"].read() == b"gateway" and part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket="master.photos", Key="a/b.txt", Range="bytes=-7")["Body"].read() == b"gateway"
    assert s3.head_object(Bucket="master.photos", Key="a/b.txt")["ContentLength"] == 14
    # one PutObject is one commit on the branch, seen by the engine
    assert gateway.engine.read_file("photos", "master", "/a/b.txt") == b"hello, gateway"
    assert _error(lambda: s3.get_object(Bucket="master.photos", Key="nope")) == ("NoSuchKey", 404)
    assert _error(lambda: s3.head_object(Bucket="master.photos", Key="nope"))[1] == 404
    assert _error(lambda: s3.list_objects_v2(Bucket="master.nosuchrepo")) == ("NoSuchBucket", 404)
    assert _error(lambda: gateway.client(secret="wrong").list_buckets()) == ("SignatureDoesNotMatch", 403)
    assert _error(lambda: s3.get_object(Bucket="master.photos", Key="a/b.txt", Range="bytes=99-")) == ("InvalidRange", 416)
    import httpx

    link = gateway.client(signature_version="s3v4").generate_presigned_url("get_object", Params={"Bucket": "master.photos", "Key": "a/b.txt"}, ExpiresIn=60)
    assert httpx.get(link).content == b"hello, gateway"  # a presigned URL, for a browser or curl
    assert httpx.get(link.replace("a/b.txt", "a/c.txt")).status_code == 403
    assert httpx.get(link.replace("X-Amz-Expires=60", "X-Amz-Expires=3600")).status_code == 403
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "master.photos" in names


def test_unsigned_and_tampered_requests_are_refused(gateway):
    import httpx

    r = httpx.get(gateway.url + "/master.photos")
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    # a correctly signed request whose body is not the one signed
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("PUT", gateway.url + "/master.photos/t.txt", data=b"signed bytes")
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    r = httpx.put(request.url, headers=dict(request.headers), content=b"other bytes!")
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content
    # ... and one whose body matches a payload hash that is not the one signed
    import hashlib

    headers = dict(request.headers)
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"other bytes!").hexdigest()
    r = httpx.put(request.url, headers=headers, content=b"other bytes!")
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    assert _error(lambda: gateway.client().head_object(Bucket="master.photos", Key="t.txt"))[1] == 404


def test_listing_v1_and_v2_prefix_delimiter_and_paging(gateway):
    s3 = gateway.client()
    s3.create_bucket(Bucket="master.listing")
    keys = [f"d{i}/f{j}.csv" for i in range(3) for j in range(4)] + ["top.txt"]
    gateway.engine.put_bytes("listing", "master", {k: k.encode() for k in keys})
    every, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket="master.listing", MaxKeys=5, **({"ContinuationToken": token} if token else {}))
        every += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert every == sorted(keys)
    top = s3.list_objects_v2(Bucket="master.listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["d0/", "d1/", "d2/"] and [o["Key"] for o in top["Contents"]] == ["top.txt"]
    # paging across common prefixes, V1 with markers
    seen, marker = [], ""
    while True:
        page = s3.list_objects(Bucket="master.listing", Delimiter="/", MaxKeys=2, Marker=marker)
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert sorted(seen) == ["d0/", "d1/", "d2/", "top.txt"]
    under = s3.list_objects_v2(Bucket="master.listing", Prefix="d1/f")
    assert [o["Key"] for o in under["Contents"]] == [f"d1/f{j}.csv" for j in range(4)]
    assert s3.list_objects_v2(Bucket="master.listing", Prefix="zzz")["KeyCount"] == 0


def test_pinned_commit_bucket_is_read_only(gateway):
    s3 = gateway.client()
    s3.create_bucket(Bucket="master.pinned")
    first = s3.put_object(Bucket="master.pinned", Key="v.txt", Body=b"one")["VersionId"]
    s3.put_object(Bucket="master.pinned", Key="v.txt", Body=b"two")
    assert s3.get_object(Bucket=f"{first}.pinned", Key="v.txt")["Body"].read() == b"one"
    assert s3.get_object(Bucket=first, Key="v.txt")["Body"].read() == b"one"
    assert s3.get_object(Bucket="master.pinned", Key="v.txt")["Body"].read() == b"two"
    assert _error(lambda: s3.put_object(Bucket=f"{first}.pinned", Key="w.txt", Body=b"x")) == ("AccessDenied", 403)


def test_delete_copy_zero_bytes_and_multipart_one_commit(gateway):
    s3 = gateway.client()
    s3.create_bucket(Bucket="master.objects")
    big = os.urandom(3 << 20)
    s3.put_object(Bucket="master.objects", Key="big.bin", Body=big)
    before = _du(gateway.store)
    commits = len(gateway.engine.list_commits("objects", "master"))
    s3.copy_object(Bucket="master.objects", Key="copy/of-big.bin", CopySource={"Bucket": "master.objects", "Key": "big.bin"})
    s3.create_bucket(Bucket="master.elsewhere")
    s3.copy_object(Bucket="master.elsewhere", Key="big.bin", CopySource="master.objects/big.bin")
    grew = _du(gateway.store) - before
    assert grew < 64 << 10, f"a copy stored {grew} bytes"  # index layers and metadata, not 3 MiB of chunks
    assert s3.get_object(Bucket="master.objects", Key="copy/of-big.bin")["Body"].read() == big
    assert s3.get_object(Bucket="master.elsewhere", Key="big.bin", Range="bytes=1000-1999")["Body"].read() == big[1000:2000]
    assert len(gateway.engine.list_commits("objects", "master")) == commits + 1
    # Small files share a chunk: a copy that re-stored the bytes would point at a new chunk from offset 0.
    gateway.engine.put_bytes("objects", "master", {"small/1.txt": b"a" * 100, "small/2.txt": b"b" * 100})
    s3.copy_object(Bucket="master.elsewhere", Key="two.txt", CopySource="master.objects/small/2.txt")
    source = gateway.engine.file_row("objects", "master", "/small/2.txt")
    assert source["refs"][0]["offset"] > 0
    assert gateway.engine.file_row("elsewhere", "master", "/two.txt")["refs"] == source["refs"]

    s3.delete_object(Bucket="master.objects", Key="copy/of-big.bin")
    assert _error(lambda: s3.head_object(Bucket="master.objects", Key="copy/of-big.bin"))[1] == 404
    s3.delete_object(Bucket="master.objects", Key="never-there")  # S3 answers it as done

    commits = len(gateway.engine.list_commits("objects", "master"))
    up = s3.create_multipart_upload(Bucket="master.objects", Key="parts/whole.bin")
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), b"tail"]
    etags = [s3.upload_part(Bucket="master.objects", Key="parts/whole.bin", UploadId=up["UploadId"], PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]
    done = s3.complete_multipart_upload(Bucket="master.objects", Key="parts/whole.bin", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    assert done["ETag"] == s3.head_object(Bucket="master.objects", Key="parts/whole.bin")["ETag"]
    assert gateway.engine.read_file("objects", "master", "/parts/whole.bin") == b"".join(parts)
    assert len(gateway.engine.list_commits("objects", "master")) == commits + 1
    aborted = s3.create_multipart_upload(Bucket="master.objects", Key="parts/never.bin")
    s3.upload_part(Bucket="master.objects", Key="parts/never.bin", UploadId=aborted["UploadId"], PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="master.objects", Key="parts/never.bin", UploadId=aborted["UploadId"])
    assert _error(lambda: s3.head_object(Bucket="master.objects", Key="parts/never.bin"))[1] == 404
    assert len(gateway.engine.list_commits("objects", "master")) == commits + 1


def test_s3fs_lists_and_reads(gateway):
    import s3fs

    gateway.engine.create_repo("fsrepo")
    gateway.engine.put_bytes("fsrepo", "master", {"data/a.csv": b"x,y\n1,2\n", "data/b.csv": b"x,y\n3,4\n"})
    fs = s3fs.S3FileSystem(key=ACCESS, secret=SECRET, endpoint_url=gateway.url, client_kwargs={"region_name": "us-east-1"},
                           config_kwargs={"s3": {"addressing_style": "path"}}, skip_instance_cache=True)
    assert sorted(fs.ls("master.fsrepo/data")) == ["master.fsrepo/data/a.csv", "master.fsrepo/data/b.csv"]
    with fs.open("master.fsrepo/data/b.csv", "rb") as f:
        f.seek(4)
        assert f.read() == b"3,4\n"
    with fs.open("master.fsrepo/data/c.csv", "wb") as f:
        f.write(b"x,y\n5,6\n")
    assert gateway.engine.read_file("fsrepo", "master", "/data/c.csv") == b"x,y\n5,6\n"


def test_duckdb_httpfs_queries_through_the_gateway(gateway):
    import duckdb
    import duckdb_ext

    rows = "".join(f"{i},{i * 2}\n" for i in range(1000))
    gateway.engine.create_repo("tables")
    gateway.engine.put_bytes("tables", "master", {"t/part-0.csv": ("a,b\n" + rows).encode(), "t/part-1.csv": ("a,b\n" + rows).encode()})
    con = duckdb.connect()
    # The extension comes from the duckdb-ext-httpfs wheel: nothing is downloaded.
    con.execute(f"SET extension_directory = '{list(duckdb_ext.__path__)[0]}/extensions'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("LOAD httpfs")
    endpoint = gateway.url.removeprefix("http://")
    con.execute(f"CREATE SECRET gw (TYPE s3, KEY_ID '{ACCESS}', SECRET '{SECRET}', ENDPOINT '{endpoint}', URL_STYLE 'path', "
                "USE_SSL false, REGION 'us-east-1')")
    count, total = con.execute("SELECT count(*), sum(b) FROM read_csv('s3://master.tables/t/*.csv')").fetchone()
    assert (count, total) == (2000, 2 * sum(i * 2 for i in range(1000)))


STEP = """
import os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"], region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
bucket = os.environ["s3in_COMMIT"] + ".s3in"  # the commit this datum reads, pinned
for name in os.listdir("/pfs/s3in"):
    body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
    open("/pfs/out/" + name + ".len", "w").write(str(len(body)))
"""


def test_a_pipeline_step_reads_its_input_through_the_gateway(gateway):
    s3 = gateway.client()
    s3.create_bucket(Bucket="master.s3in")
    spec = {"pipeline": {"name": "s3lens"}, "input": {"pfs": {"repo": "s3in", "glob": "/*"}},
            "transform": {"cmd": [sys.executable, "-c", STEP],  # dpl's venv, which has boto3
                          "env": {"S3_URL": gateway.url, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}},
            "dpl": {"network": True}}
    gateway.engine.create_pipeline(json.dumps(spec))
    s3.put_object(Bucket="master.s3in", Key="seven.txt", Body=b"1234567")  # lands a commit: the server runs the job
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        jobs = gateway.engine.list_jobs("s3lens")
        if any(j["state"] == "failure" for j in jobs) or _output(gateway.engine) is not None:
            break
        time.sleep(0.2)
    assert all(j["state"] != "failure" for j in jobs), [j.get("error") for j in jobs]
    assert _output(gateway.engine) == b"7"


def _output(engine) -> bytes | None:
    from dpl.storage.errors import DplError

    try:
        return engine.read_file("s3lens", "master", "/seven.txt.len")
    except DplError:  # no output commit yet
        return None


def test_s3_gateway_alone_runs_open_only_on_loopback(tmp_path):
    import httpx
    from dpl.engine import Store

    store = Store.init(tmp_path / "store", durable=False)
    store.create_repo("open")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPL_S3_", "DPL_ADDRESS"))}
    refused = subprocess.run([DPL, "s3-gateway", "--listen", "0.0.0.0:0", "--store", str(store.root)], env=env,
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "needs users or a key pair" in refused.stderr and "Traceback" not in refused.stderr
    log = tmp_path / "gw.log"
    proc = subprocess.Popen([DPL, "s3-gateway", "--listen", "127.0.0.1:0", "--store", str(store.root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        url = _address(log, proc)
        assert httpx.put(url + "/master.open/hello.txt", content=b"hi").status_code == 200  # unsigned, on loopback
        assert httpx.get(url + "/master.open/hello.txt").content == b"hi"
        assert store.read_file("open", "master", "/hello.txt") == b"hi"
        # bad input is a 4xx with an S3 error body, never a 500
        upload = httpx.post(url + "/master.open/big.bin?uploads").text.split("<UploadId>")[1].split("<")[0]
        for call in (lambda: httpx.get(url + "/master.open/hello.txt", headers={"Range": "bytes=abc"}),
                     lambda: httpx.get(url + "/master.open?list-type=2&max-keys=many"),
                     lambda: httpx.get(url + "/master.open?list-type=2&continuation-token=%%%"),
                     lambda: httpx.put(url + "/master.open/a%00b", content=b"x"),
                     lambda: httpx.post(url + f"/master.open/big.bin?uploadId={upload}", content=b"<not xml"),
                     lambda: httpx.post(url + f"/master.open/big.bin?uploadId={upload}",
                                        content=b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"),
                     lambda: httpx.put(url + "/master.open/c.txt", headers={"x-amz-copy-source": "nobucket"}),
                     lambda: httpx.get(url + "/no-such-commit/x")):
            answer = call()
            assert 400 <= answer.status_code < 500 and b"<Error><Code>" in answer.content, (answer.status_code, answer.content)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_bodies_and_parts_spool_under_the_store_and_a_restart_sweeps_a_killed_gateways(tmp_path):
    """Bodies go to the store's disk (server/spool.py), not /tmp: a put leaves
    nothing behind, and the parts of an upload a SIGKILL cut short are
    swept by the next gateway on the store."""
    import httpx
    from dpl.engine import Store

    store = Store.init(tmp_path / "store", durable=False)
    store.create_repo("parts")
    spooled = store.root / "tmp" / "uploads"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPL_S3_", "DPL_ADDRESS"))}

    def start(log):
        proc = subprocess.Popen([DPL, "s3-gateway", "--listen", "127.0.0.1:0", "--store", str(store.root)], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        return proc, _address(log, proc)

    proc, url = start(tmp_path / "first.log")
    try:
        assert httpx.put(url + "/master.parts/one.bin", content=b"x" * 3_000_000).status_code == 200
        assert list(spooled.iterdir()) == []  # the put's spool went with its request
        upload = httpx.post(url + "/master.parts/big.bin?uploads").text.split("<UploadId>")[1].split("<")[0]
        part = httpx.put(url + f"/master.parts/big.bin?uploadId={upload}&partNumber=1", content=b"p" * 1_000_000)
        assert part.status_code == 200
        (held,) = spooled.iterdir()
        assert held.name.startswith(f"{proc.pid}-") and [p.stat().st_size for p in held.iterdir()] == [1_000_000]
    finally:
        proc.kill()
        proc.wait(30)
    assert held.exists()  # a SIGKILL runs no cleanup
    proc, url = start(tmp_path / "second.log")
    try:
        started = [json.loads(line) for line in (tmp_path / "second.log").read_text().splitlines() if '"s3.listening"' in line]
        assert started[-1]["swept_uploads"] == 1 and list(spooled.iterdir()) == []
        assert b"NoSuchUpload" in httpx.post(url + f"/master.parts/big.bin?uploadId={upload}",
                                            content=b"<CompleteMultipartUpload/>").content
        assert store.read_file("parts", "master", "/one.bin") == b"x" * 3_000_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_users_sign_with_their_token_keys_and_hold_their_roles(tmp_path):
    from dpl.engine import Store

    store = Store.init(tmp_path / "store", durable=False)
    for repo in ("shared", "mine", "secret"):
        store.create_repo(repo)
        store.put_bytes(repo, "master", {"f.txt": repo.encode()})
    store.auth.activate("admin")
    store.auth.create_user("ann")
    token = store.auth.create_token("ann")
    store.auth.grant("shared", "ann", "reader")
    store.auth.grant("mine", "ann", "writer")
    gw = Gateway(store.root, tmp_path, keys=False)
    try:
        ann = gw.client(access=token["s3_access_key"], secret=token["s3_secret_key"])
        assert sorted(b["Name"] for b in ann.list_buckets()["Buckets"]) == ["master.mine", "master.shared"]
        assert ann.get_object(Bucket="master.shared", Key="f.txt")["Body"].read() == b"shared"
        assert _error(lambda: ann.put_object(Bucket="master.shared", Key="g.txt", Body=b"x")) == ("AccessDenied", 403)
        assert _error(lambda: ann.get_object(Bucket="master.secret", Key="f.txt")) == ("AccessDenied", 403)
        ann.put_object(Bucket="master.mine", Key="g.txt", Body=b"by ann")
        assert _error(lambda: ann.copy_object(Bucket="master.mine", Key="s.txt", CopySource="master.secret/f.txt")) == ("AccessDenied", 403)
        assert _error(lambda: gw.client(access=token["s3_access_key"], secret="wrong").list_buckets()) == ("SignatureDoesNotMatch", 403)
        forged = gw.client(access=token["s3_access_key"], secret="wrong")
        assert _error(lambda: forged.put_object(Bucket="master.mine", Key="h.txt", Body=b"x")) == ("SignatureDoesNotMatch", 403)
        assert _error(lambda: gw.client(access="nobody", secret="x").list_buckets()) == ("InvalidAccessKeyId", 403)
        writes = [(e["user"], e["action"], e["target"], e["status"]) for e in store.auth.audit_log(user="ann")]
        assert ("ann", "s3 PUT", "/master.mine/g.txt", 200) in writes and ("ann", "s3 PUT", "/master.shared/g.txt", 403) in writes
        assert (None, "s3 PUT", "/master.mine/h.txt", 403) in [(e["user"], e["action"], e["target"], e["status"])
                                                                for e in store.auth.audit_log()]
        store.auth.revoke_token(token["id"])
        assert _error(lambda: ann.list_buckets()) == ("InvalidAccessKeyId", 403)
    finally:
        gw.stop()
