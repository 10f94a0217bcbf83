"""Provenance (issue 4): one file's provenance in a 3-stage DAG with 100,000 datums per stage.

    lookup  build  data -> s1 -> s2 -> s3, each stage with glob /* (one datum per
            file), then time the whole `dpl provenance s3@master:/FILE` call and
            the same with `-o json`; target under 1 s

Building the DAG runs 3 x N real datums; `DPL_BENCH_PROV_N` sets N (default
100,000; 1,000 with --quick).  Stages run with the plain-subprocess sandbox
(DPL_SANDBOX=none) because the set-up, not the sandbox, is not what is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import harness as h
from bench_pipelines import flat_files
from harness import Context, measure

BENCHMARKS = {}


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _stage(path: str, name: str, source: str) -> str:
    with open(path, "w") as f:
        json.dump({
            "pipeline": {"name": name},
            "transform": {"cmd": ["sh", "-c", f"cp /pfs/{source}/* /pfs/out/"]},
            "parallelism_spec": {"constant": os.cpu_count() or 1},
            "input": {"pfs": {"repo": source, "glob": "/*"}},
        }, f)
    return path


@benchmark
def lookup(ctx: Context) -> None:
    n = int(os.environ.get("DPL_BENCH_PROV_N") or (1_000 if ctx.quick else 100_000))
    src = flat_files(ctx, n)
    sec = ctx.section("provenance.lookup", f"provenance of one file in a 3-stage DAG, {n:,} datums per stage")
    scratch = ctx.scratch("prov")
    store = h.new_store(os.path.join(scratch, "store"), "data")
    env = {"DPL_STORE": store, "DPL_SANDBOX": "none"}
    h.run(h.dpl_cmd("put-file", "-r", "data@master", src), env=env)
    t = time.perf_counter()
    for name, source in (("s1", "data"), ("s2", "s1"), ("s3", "s2")):
        h.run(h.dpl_cmd("create-pipeline", _stage(os.path.join(scratch, f"{name}.json"), name, source)), env=env)
    sec.info("building the DAG (untimed set-up)", f"{time.perf_counter() - t:.0f} s for {3 * n:,} datums")
    target = "s3@master:/" + sorted(os.listdir(src))[n // 2]
    tree = sec.add("tree", measure("dpl provenance (tree)", {"cmd": h.dpl_cmd("provenance", target), "env": env}, repeat=ctx.repeat))
    js = sec.add("json", measure("dpl provenance -o json", {"cmd": h.dpl_cmd("provenance", target, "-o", "json"), "env": env}, repeat=ctx.repeat))
    sec.limit("provenance, whole CLI call", max(tree.seconds, js.seconds), at_most=1)
    sec.close()
    shutil.rmtree(scratch, ignore_errors=True)
