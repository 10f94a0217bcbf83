"""Reading dpl data from the tools people already use (issue 17's speed section).

    duckdb   DuckDB `SELECT count(*), avg(x)` over a CSV in a repo, via dpl://
             and via the S3 gateway (httpfs), against the same file on local disk
    gateway  GET of one object through the S3 gateway vs SeaweedFS serving the
             same object directly (same boto3 reader on both sides)
    mount    `ls -l` of a many-file directory on `dpl mount`, and sequential
             read (`cat`) of a big file on the mount vs `dpl get-file`, both to /dev/null

Every timed side is a whole child process, as a user meets it; servers (the
gateway, SeaweedFS, the mount) are started untimed on loopback.  Sizes are
the issue's unless an environment variable says otherwise:

    DPL_BENCH_CSV_BYTES     (1 GiB)    DPL_BENCH_OBJECT_BYTES  (1 GiB)
    DPL_BENCH_MOUNT_FILES   (100,000)  DPL_BENCH_MOUNT_BYTES   (2 GiB)

    python bench/run.py access            all three, at full size
    python bench/run.py --quick access    small sizes: a smoke run
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))

import generated  # noqa: E402
import harness as h  # noqa: E402
from harness import Context  # noqa: E402

BENCHMARKS = {}
SIZES = {  # env var: (full, quick)
    "DPL_BENCH_CSV_BYTES": (1 << 30, 16 << 20),
    "DPL_BENCH_OBJECT_BYTES": (1 << 30, 16 << 20),
    "DPL_BENCH_MOUNT_FILES": (100_000, 2_000),
    "DPL_BENCH_MOUNT_BYTES": (2 << 30, 32 << 20),
}


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def size(ctx: Context, var: str) -> int:
    full, quick = SIZES[var]
    return int(float(os.environ[var])) if os.environ.get(var) else (quick if ctx.quick else full)


def load_average(sec, when: str) -> None:
    """The machine's load, said beside the figures (a shared machine's load moves them)."""
    with contextlib.suppress(OSError):
        sec.info(f"load average {when}", " ".join(open("/proc/loadavg").read().split()[:3]) + " (1, 5, 15 min)")


def per_round(sec, label: str, slow, fast) -> None:
    """`slow`'s time over `fast`'s round by round (each round runs both, in turn,
    so both meet the same load), with the min and the median."""
    import statistics

    ratios = [a.seconds / b.seconds for a, b in zip(slow.runs, fast.runs) if b.seconds]
    if ratios:
        said = " ".join(f"{r:.2f}" for r in ratios)
        sec.info(f"{label}, per round", f"{said}  (min {min(ratios):.2f}, median {statistics.median(ratios):.2f})")


# ------------------------------------------------------------------- data


def csv_file(ctx: Context, nbytes: int) -> tuple[str, int]:
    """A CSV `i,x` of about `nbytes` (integers and floats), and its row count."""

    def make(path: str) -> int:
        import numpy as np

        h.say(f"  (generating a {h.human_bytes(nbytes)} CSV {path})")
        rng = np.random.default_rng(7)
        rows, written, start = 0, 0, 0
        with open(path, "w") as f:
            f.write("i,x\n")
            while written < nbytes:
                n = 1_000_000
                block = "\n".join(f"{i},{x:.4f}" for i, x in zip(range(start, start + n), rng.random(n) * 1000)) + "\n"
                block = block[: max(0, nbytes - written)]
                block = block[: block.rfind("\n") + 1]
                if not block:
                    break
                f.write(block)
                written += len(block)
                rows += block.count("\n")
                start += n
        return rows

    path = os.path.join(ctx.data_dir, f"access-{nbytes}.csv")
    return path, int(generated.once(path, make))


def many_files(ctx: Context, n: int) -> str:
    """A directory `many/` of `n` small files (reused across runs)."""

    def make(root: str) -> None:
        os.makedirs(os.path.join(root, "many"))
        h.say(f"  (generating {n:,} files in {root}/many)")
        for i in range(n):
            with open(os.path.join(root, "many", f"f{i:06d}.txt"), "w") as f:
                f.write(f"{i}\n")

    root = os.path.join(ctx.data_dir, f"access-many-{n}")
    generated.once(root, make)
    return root


def store_with(ctx: Context, name: str) -> str:
    return h.new_store(os.path.join(ctx.scratch(name), "store"), "data", metadata=ctx.new_metadata())


# ---------------------------------------------------------------- servers


ACCESS, SECRET = "dpl-bench-key", "dpl-bench-" + secrets.token_hex(12)


@contextlib.contextmanager
def gateway(ctx: Context, store: str):
    """`dpl s3-gateway` on loopback over `store`: yields its URL."""
    log = os.path.join(ctx.scratch("gateway"), "gateway.log")
    env = dict(os.environ, DPL_S3_ACCESS_KEY=ACCESS, DPL_S3_SECRET_KEY=SECRET)
    proc = subprocess.Popen([h.DPL, "s3-gateway", "--listen", "127.0.0.1:0", "--store", store], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            for line in open(log).read().splitlines():
                if '"s3.listening"' in line:
                    url = json.loads(line)["address"]
            if url is None and (proc.poll() is not None or time.monotonic() > deadline):
                raise h.CommandFailed("the S3 gateway did not start:\n" + open(log).read()[-2000:])
            time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def mounted(store: str, target: str, where: str):
    """`dpl mount TARGET WHERE` in its own session until the block ends."""
    os.makedirs(where, exist_ok=True)
    proc = subprocess.Popen([h.DPL, "mount", target, where], env=dict(os.environ, DPL_STORE=store),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(where):
            if proc.poll() is not None:
                raise h.CommandFailed(f"dpl mount exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise h.CommandFailed("dpl mount did not mount within 60 s")
            time.sleep(0.05)
        yield where
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.path.ismount(where):
            subprocess.run(["fusermount3", "-uz", where], check=False)


def evict(path: str) -> None:
    """Drop a mounted file's pages from the kernel's cache (a read-only mount
    keeps them), so that every timed read goes through the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError, EnvironmentError) as e:
        return f"mfusepy cannot load libfuse: {e}"
    return None


# ------------------------------------------------------------------ duckdb


QUERY = "SELECT count(*), avg(x) FROM read_csv('{url}')"

DUCKDB_LOCAL = """
import sys, duckdb
rows = int(sys.argv[2])
got = duckdb.connect().execute(%r.format(url=sys.argv[1])).fetchone()
assert got[0] == rows, (got, rows)
""" % QUERY

DUCKDB_FSSPEC = """
import sys, duckdb, fsspec
rows = int(sys.argv[3])
con = duckdb.connect()
con.register_filesystem(fsspec.filesystem("dpl", store=sys.argv[2]))
got = con.execute(%r.format(url=sys.argv[1])).fetchone()
assert got[0] == rows, (got, rows)
""" % QUERY

DUCKDB_HTTPFS = """
import sys, duckdb, duckdb_ext
url, endpoint, key, secret, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
con = duckdb.connect()
con.execute(f"SET extension_directory = '{list(duckdb_ext.__path__)[0]}/extensions'")
con.execute("SET autoinstall_known_extensions = false")
con.execute("LOAD httpfs")
con.execute(f"CREATE SECRET gw (TYPE s3, KEY_ID '{key}', SECRET '{secret}', ENDPOINT '{endpoint}', URL_STYLE 'path', "
            "USE_SSL false, REGION 'us-east-1')")
got = con.execute(%r.format(url=url)).fetchone()
assert got[0] == rows, (got, rows)
""" % QUERY


@benchmark
def duckdb(ctx: Context) -> None:
    nbytes = size(ctx, "DPL_BENCH_CSV_BYTES")
    src, rows = csv_file(ctx, nbytes)
    sec = ctx.section("access.duckdb", f"DuckDB count(*), avg(x) over a {h.human_bytes(nbytes)} CSV ({rows:,} rows)")
    store = store_with(ctx, "duckdb")
    h.dpl("put-file", "data@master:/t.csv", src, store=store)
    with gateway(ctx, store) as url:
        rounds = h.Rounds(ctx.repeat)
        rounds.add("local", "duckdb, local file", [sys.executable, "-c", DUCKDB_LOCAL, src, str(rows)], nbytes=nbytes)
        rounds.add("fsspec", "duckdb, dpl:// (fsspec)",
                   [sys.executable, "-c", DUCKDB_FSSPEC, "dpl://data@master/t.csv", store, str(rows)], nbytes=nbytes)
        rounds.add("gateway", "duckdb, S3 gateway (httpfs)",
                   [sys.executable, "-c", DUCKDB_HTTPFS, "s3://master.data/t.csv", url.removeprefix("http://"), ACCESS, SECRET,
                    str(rows)], nbytes=nbytes)
        h.run(rounds.specs[0][2])  # the file into the page cache: every side reads a warm disk
        load_average(sec, "before")
        figures = rounds.run()
        load_average(sec, "after")
    local, fsspec, gw = (sec.add(k, figures[k]) for k in ("local", "fsspec", "gateway"))
    sec.ratio("duckdb dpl:// / local", fsspec.seconds / local.seconds, at_most=1.5)
    sec.ratio("duckdb S3 gateway / local", gw.seconds / local.seconds, at_most=2)
    per_round(sec, "dpl:// / local", fsspec, local)
    per_round(sec, "S3 gateway / local", gw, local)
    sec.close()


# ----------------------------------------------------------------- gateway


GET = """
import sys, boto3
from botocore.config import Config
endpoint, key, secret, bucket, name, nbytes = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
body, got = s3.get_object(Bucket=bucket, Key=name)["Body"], 0
while chunk := body.read(1 << 20):
    got += len(chunk)
assert got == int(nbytes), (got, nbytes)
"""


@benchmark
def gateway_get(ctx: Context) -> None:
    nbytes = size(ctx, "DPL_BENCH_OBJECT_BYTES")
    src = generated.big_file(ctx, nbytes)
    sec = ctx.section("access.gateway_get", f"GET of one {h.human_bytes(nbytes)} object: S3 gateway vs SeaweedFS")
    try:
        from services.common import Unavailable
        from services.seaweedfs import SeaweedFS
    except ImportError as e:
        sec.unavailable("SeaweedFS", str(e))
        sec.close()
        return
    try:
        weed = SeaweedFS(ctx.scratch("seaweedfs"), bucket="dpl-bench")
        weed.start()
    except Unavailable as e:
        sec.unavailable("SeaweedFS", str(e))
        sec.close()
        return
    try:
        env = weed.environ()
        import boto3

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        s3.upload_file(src, weed.bucket, "big.bin")
        store = store_with(ctx, "gateway")
        h.dpl("put-file", "data@master:/big.bin", src, store=store)
        with gateway(ctx, store) as url:
            rounds = h.Rounds(ctx.repeat)
            rounds.add("seaweedfs", "boto3 GET from SeaweedFS",
                       [sys.executable, "-c", GET, env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                        weed.bucket, "big.bin", str(nbytes)], nbytes=nbytes)
            rounds.add("gateway", "boto3 GET from the dpl S3 gateway",
                       [sys.executable, "-c", GET, url, ACCESS, SECRET, "master.data", "big.bin", str(nbytes)], nbytes=nbytes)
            figures = rounds.run()
    finally:
        weed.stop()
    weed_fig, gw = (sec.add(k, figures[k]) for k in ("seaweedfs", "gateway"))
    sec.ratio("gateway GET throughput / SeaweedFS", gw.throughput / weed_fig.throughput, at_least=0.5)
    sec.close()


# ------------------------------------------------------------------- mount


@benchmark
def mount(ctx: Context) -> None:
    files, nbytes = size(ctx, "DPL_BENCH_MOUNT_FILES"), size(ctx, "DPL_BENCH_MOUNT_BYTES")
    sec = ctx.section("access.mount", f"dpl mount: ls -l of {files:,} files, cat of a {h.human_bytes(nbytes)} file")
    why = fuse_missing()
    if why:
        sec.unavailable("dpl mount", why)
        sec.close()
        return
    tree, big = many_files(ctx, files), generated.big_file(ctx, nbytes)
    store = store_with(ctx, "mount")
    h.dpl("put-file", "-r", "data@master", tree, store=store)
    h.dpl("put-file", "data@master:/big.bin", big, store=store)
    scratch = ctx.scratch("mount-out")
    mnt = os.path.join(scratch, "mnt")

    def ls_l(_):
        return f"ls -l {mnt}/many > {scratch}/ls.txt"

    def check_ls(_):
        with open(os.path.join(scratch, "ls.txt")) as f:
            lines = sum(1 for _ in f)
        if lines != files + 1:
            raise h.CommandFailed(f"ls -l listed {lines - 1} files, not {files}")

    with mounted(store, "data@master", mnt):
        load_average(sec, "before")
        # a fresh listing each time would need a fresh mount; the first run is the cold one, shown in [runs]
        ls = sec.add("ls", h.measure(f"ls -l of {files:,} files on the mount", ls_l, repeat=ctx.repeat, teardown=check_ls))
        rounds = h.Rounds(ctx.repeat)
        # Both sides write to /dev/null: written to files, each side's 2 GiB of
        # dirty pages throttled the other's writes (get-file took 1.2 s, then 18 s).
        rounds.add("get", "dpl get-file > /dev/null", {"cmd": h.dpl_cmd("get-file", "data@master:/big.bin"),
                                                      "env": {"DPL_STORE": store}}, nbytes=nbytes)
        rounds.add("cat", "cat of the file on the mount", f"cat {mnt}/big.bin > /dev/null", nbytes=nbytes,
                   setup=lambda i: evict(os.path.join(mnt, "big.bin")))
        figures = rounds.run()
        load_average(sec, "after")
        with open(os.path.join(mnt, "big.bin"), "rb") as f:  # untimed: the mount served every byte
            seen = sum(len(block) for block in iter(lambda: f.read(1 << 20), b""))
        if seen != nbytes:
            raise h.CommandFailed(f"the mount served {seen} bytes of big.bin, not {nbytes}")
    get, cat = (sec.add(k, figures[k]) for k in ("get", "cat"))
    sec.limit(f"ls -l of {files:,} files on the mount", ls.runs[0].seconds, at_most=2.0)
    sec.info("ls -l, later runs (listing cached)", " ".join(f"{r.seconds:.3f} s" for r in ls.runs[1:]) or "-")
    sec.ratio("mount sequential read / get-file", cat.throughput / get.throughput, at_least=0.5)
    per_round(sec, "mount read / get-file throughput", get, cat)
    sec.close()


if __name__ == "__main__":
    import run

    sys.exit(run.main(["access", *sys.argv[1:]]))
