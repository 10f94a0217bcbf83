"""The docker executor's cost per datum (issue 5), against a container per datum.

    overhead   1,000 trivial datums (a 16-byte file copied to /pfs/out) on the
               docker executor, whose containers live for the whole job: the
               job's time divided by its datums is the amortised overhead of
               a datum (target: at most 30 ms).  For comparison, the same
               step as one `docker run` per datum (the same bind mounts and
               parallelism, no network), measured over 50 datums and
               extrapolated to 1,000.

Standalone:  .venv/bin/python bench/bench_docker.py [--datums N] [--runs N]
From run.py: python bench/run.py docker

Needs a Docker engine (started here, as root, if dockerd is installed and not
running) and builds its busybox image locally as the tests do; nothing is
pulled.  Data lives under bench/data (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))

import harness as h  # noqa: E402
from harness import Figure  # noqa: E402

BENCHMARKS = {}
STEP = ["cp", "-r", "/pfs/data/.", "/pfs/out/"]
TARGET_MS = 30.0


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _datum_files(ctx: h.Context, n: int) -> str:
    root = os.path.join(ctx.data_dir, f"docker-datums-{n}")
    marker = root + ".ok"
    if not os.path.exists(marker):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for i in range(n):
            with open(os.path.join(root, f"d{i:05d}"), "w") as f:
                f.write(f"datum {i:05d} bytes\n")
        open(marker, "w").close()
    return root


def _engine(ctx: h.Context):
    from services.dockerd import DockerEngine

    engine = DockerEngine(ctx.scratch("dockerd"))
    engine.start()
    engine.build_test_images()
    return engine


def _job_seconds(store: str, pipeline: str) -> tuple[float, dict]:
    proc = subprocess.run([h.DPL, "list-job", "-p", pipeline, "-o", "json"], env=dict(os.environ, DPL_STORE=store),
                          capture_output=True, check=True)
    job = json.loads(proc.stdout)[0]
    return job["duration"], job


@benchmark
def overhead(ctx: h.Context, n: int | None = None, runs: int | None = None) -> None:
    n = n or (200 if ctx.quick else 1000)
    runs = runs or (10 if ctx.quick else 50)
    slots = max(1, min(4, os.cpu_count() or 1))
    sec = ctx.section("docker.overhead", f"{n:,} trivial datums on the docker executor, parallelism {slots}")
    try:
        engine = _engine(ctx)
    except Exception as e:  # services.dockerd.Unavailable and docker-py errors alike
        sec.unavailable("docker executor", str(e))
        sec.close()
        return
    image = engine.images["busybox"]
    data = _datum_files(ctx, n)
    try:
        store = os.path.join(ctx.scratch("docker-store"), "store")
        h.run([h.DPL, "init", store, "--executor", "docker"])
        env = {"DPL_STORE": store}
        h.run([h.DPL, "create-repo", "data"], env=env)
        h.run([h.DPL, "put-file", "data@master", data, "-r"], env=env)
        spec = {"pipeline": {"name": "trivial"}, "transform": {"image": image, "cmd": STEP},
                "input": {"pfs": {"repo": "data", "glob": "/*"}}, "parallelism_spec": {"constant": slots}}
        spec_path = os.path.join(os.path.dirname(store), "trivial.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        h.run([h.DPL, "create-pipeline", spec_path, "--no-wait"], env=env)
        h.sync()
        fig = sec.add("run", Figure(f"dpl run: {n:,} datums (whole command)", [h.run([h.DPL, "run"], env=env)]))
        job_seconds, job = _job_seconds(store, "trivial")
        assert job["state"] == "success" and job["processed"] == n, job
        per_datum = job_seconds / n
        sec.info("job time (job start to output commit)", f"{job_seconds:.2f} s")
        sec.info("per datum: job time / datums", f"{per_datum * 1000:.1f} ms")
        sec.info("per datum: whole command / datums", f"{fig.seconds / n * 1000:.1f} ms")
        sec.limit("docker executor, per datum", per_datum * 1000, at_most=TARGET_MS, unit="ms")

        per_run = _docker_run_per_datum(engine, image, data, runs, slots, ctx)
        sec.info(f"docker run per datum: {runs} datums", f"{per_run * runs:.2f} s (parallelism {slots})")
        sec.info("docker run, per datum", f"{per_run * 1000:.1f} ms")
        sec.info(f"docker run, {n:,} datums (extrapolated)", f"{per_run * n:.1f} s")
        sec.info("docker run / docker executor, per datum", f"{per_run / per_datum:.1f} x")
    finally:
        engine.stop()
        sec.close()


def _docker_run_per_datum(engine, image: str, data: str, runs: int, slots: int, ctx: h.Context) -> float:
    """Amortised seconds per datum of one `docker run` per datum (same mounts, same parallelism)."""
    from docker.types import Mount

    names = sorted(os.listdir(data))[:runs]
    work = ctx.scratch("docker-run")

    def one(name: str) -> None:
        pfs = tempfile.mkdtemp(dir=work)
        os.makedirs(os.path.join(pfs, "data"))
        os.makedirs(os.path.join(pfs, "out"))
        shutil.copy(os.path.join(data, name), os.path.join(pfs, "data", name))
        out = tempfile.mkdtemp(dir=work, prefix="out-")
        engine.client.containers.run(
            image, STEP, remove=True, network_mode="none",
            mounts=[Mount("/pfs", pfs, type="bind", read_only=True), Mount("/pfs/out", out, type="bind")],
        )
        assert os.listdir(out) == [name]

    one(names[0])  # warm: the first start pays for loading the image's layers
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        list(pool.map(one, names))
    return (time.perf_counter() - started) / len(names)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datums", type=int, default=1000, help="trivial datums on the docker executor (default 1000)")
    parser.add_argument("--runs", type=int, default=50, help="datums measured as one docker run each (default 50)")
    parser.add_argument("--data", default=os.environ.get("DPL_BENCH_DATA", os.path.join(BENCH_DIR, "data")))
    args = parser.parse_args(argv)
    ctx = h.Context(quick=False, data_dir=args.data, repeat=1)
    h.say(f"dpl: {h.DPL}, {os.cpu_count()} CPUs")
    try:
        overhead(ctx, n=args.datums, runs=args.runs)
    finally:
        ctx.cleanup()
    missed = [r for res in ctx.results for r in res["ratios"] if not r["ok"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
