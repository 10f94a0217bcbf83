"""Datums per second on the Ray executor (a local two-node cluster) next to the local executor.

    python bench/bench_ray.py                  10,000 small datums, on a cluster it starts
    python bench/bench_ray.py --datums 1000    fewer datums (a smoke run)
    python bench/bench_ray.py --address H:P    an existing cluster instead of starting one
    python bench/run.py ray                    the same, as part of the benchmark driver

One input repo of N files of 100 bytes with glob `/*` is N datums; the step
copies its file to /pfs/out.  The same spec (parallelism_spec 2, for the two
cores a two-node cluster of one CPU per node has) runs once per executor, in a
store of its own, with the input put (untimed) and the pipeline created with
--no-wait, so that the timed command, `dpl run --executor X`, is one job.
Figures: that command's wall time (CLI start-up and, for Ray, joining the
cluster included), and the job's own duration from `inspect-job`, from which
datums per second are computed.
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

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests", "services"))

DPL = os.path.join(os.path.dirname(sys.executable), "dpl")
FULL, QUICK = 10_000, 500
FILE_BYTES = 100

BENCHMARKS = {}


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _dpl(*args, store: str, env: dict | None = None) -> str:
    proc = subprocess.run([DPL, *map(str, args)], env=dict(os.environ, DPL_STORE=store, **(env or {})), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dpl {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode()


def make_data(data_dir: str, n: int) -> str:
    """N files of FILE_BYTES distinct bytes, made once and kept (bench/data is gitignored)."""
    path = os.path.join(data_dir, f"ray-datums-{n}")
    if os.path.exists(path + ".ok"):
        return path
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for i in range(n):
        with open(os.path.join(path, f"d{i:06d}"), "wb") as f:
            f.write((f"datum {i:06d} ".encode() * 10)[:FILE_BYTES])
    open(path + ".ok", "w").close()
    return path


def spec() -> dict:
    return {
        "pipeline": {"name": "copy"},
        "input": {"pfs": {"repo": "inputs", "glob": "/*"}},
        "transform": {"cmd": ["sh", "-c", "cp /pfs/inputs/* /pfs/out/"]},
        "parallelism_spec": {"constant": 2},
    }


def run_one(executor: str, data: str, scratch: str, env: dict) -> dict:
    """Time one job of len(data) datums on `executor`; return its figures."""
    store = os.path.join(scratch, f"store-{executor}")
    _dpl("init", store, store=store)
    _dpl("create-repo", "inputs", store=store)
    _dpl("put-file", "inputs@master:/", "-r", data + "/", store=store)
    spec_path = os.path.join(scratch, "copy.json")
    with open(spec_path, "w") as f:
        json.dump(spec(), f)
    _dpl("create-pipeline", "-f", spec_path, "--no-wait", store=store)
    os.sync()
    started = time.perf_counter()
    _dpl("run", "--executor", executor, store=store, env=env)
    wall = time.perf_counter() - started
    jobs = json.loads(_dpl("list-job", "-o", "json", store=store))
    job = next(j for j in jobs if j["pipeline"] == "copy")
    if job["state"] != "success":
        raise RuntimeError(f"the {executor} job did not succeed: {job['error']}")
    files = json.loads(_dpl("list-file", "copy@master", "-o", "json", store=store))
    return {
        "executor": executor,
        "datums": job["processed"],
        "outputs": len(files),
        "job_seconds": job["duration"],
        "wall_seconds": wall,
        "datums_per_second": job["processed"] / job["duration"],
        "info": job["executor"],
    }


def run_all(n: int, data_dir: str, address: str | None, say=print) -> list[dict]:
    data = make_data(data_dir, n)
    scratch = tempfile.mkdtemp(prefix="tmp-ray-", dir=data_dir)
    cluster = None
    try:
        if address is None:
            from raycluster import RayCluster

            say("starting a two-node Ray cluster (1 CPU per node) ...")
            cluster = RayCluster(os.path.join(scratch, "ray"), nodes=2, cpus_per_node=1)
            cluster.start()
            address = cluster.address
        results = []
        for executor in ("local", "ray"):
            say(f"running {n:,} datums on the {executor} executor ...")
            results.append(run_one(executor, data, scratch, {"RAY_ADDRESS": address}))
        return results
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def report(results: list[dict], say=print) -> None:
    say(f"{'executor':<10} {'datums':>7} {'outputs':>8} {'job s':>8} {'wall s':>8} {'datums/s':>9}")
    for r in results:
        say(f"{r['executor']:<10} {r['datums']:>7,} {r['outputs']:>8,} {r['job_seconds']:>8.1f} {r['wall_seconds']:>8.1f} {r['datums_per_second']:>9.1f}")
    by = {r["executor"]: r for r in results}
    if "local" in by and "ray" in by:
        say(f"ray / local datums per second: {by['ray']['datums_per_second'] / by['local']['datums_per_second']:.2f} x")


@benchmark
def datums(ctx) -> None:
    """For bench/run.py: the same figures in its report."""
    import harness as h

    section = ctx.section("ray.datums", f"{QUICK if ctx.quick else FULL:,} small datums: Ray (2-node local cluster) vs local")
    try:
        results = run_all(QUICK if ctx.quick else FULL, ctx.data_dir, os.environ.get("DPL_BENCH_RAY_ADDRESS"), say=h.say)
    except Exception as e:  # no Ray here: say so, as the other benchmarks do for a missing peer
        section.unavailable("ray executor", str(e).splitlines()[0] if str(e) else type(e).__name__)
        section.close()
        return
    for r in results:
        section.add(r["executor"], h.Figure(f"dpl run --executor {r['executor']} ({r['datums']:,} datums)",
                                            [h.Run(r["job_seconds"], 0)], note=f"{r['datums_per_second']:.1f} datums/s"))
    report(results, say=h.say)
    section.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datums", type=int, default=FULL, help=f"how many datums (default {FULL:,})")
    parser.add_argument("--address", help="an existing Ray cluster (default: start a two-node one here)")
    parser.add_argument("--data", default=os.environ.get("DPL_BENCH_DATA", os.path.join(BENCH_DIR, "data")), help="where data and scratch stores live")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; dpl: {DPL}")
    results = run_all(args.datums, os.path.abspath(args.data), args.address)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
