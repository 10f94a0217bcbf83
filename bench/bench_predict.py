"""Predicting a job (issue 15): `dpl list-datum -f spec.json` on a 100,000-file input.

    list_datum  a data repo of N files, a spec with glob /* (one datum per file):
                time the whole `dpl list-datum -f spec.json -o json` call (every
                datum, would it run, why) and `create-pipeline --dry-run -o json`;
                target under 2 s.  N is DPL_BENCH_PREDICT_N (default 100,000;
                2,000 with --quick).
"""

from __future__ import annotations

import json
import os
import shutil

import harness as h
from bench_pipelines import flat_files
from harness import Context, measure

BENCHMARKS = {}


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


@benchmark
def list_datum(ctx: Context) -> None:
    n = int(os.environ.get("DPL_BENCH_PREDICT_N") or (2_000 if ctx.quick else 100_000))
    src = flat_files(ctx, n)
    sec = ctx.section("predict.list_datum", f"the datums a spec would make, on a {n:,}-file input")
    scratch = ctx.scratch("predict")
    store = h.new_store(os.path.join(scratch, "store"), "data", metadata=ctx.new_metadata())
    env = {"DPL_STORE": store}
    h.run(h.dpl_cmd("put-file", "-r", "data@master", src), env=env)
    spec = os.path.join(scratch, "spec.json")
    with open(spec, "w") as f:
        json.dump({"pipeline": {"name": "copy"}, "transform": {"cmd": ["sh", "-c", "cp /pfs/data/* /pfs/out/"]},
                   "input": {"pfs": {"repo": "data", "glob": "/*"}}}, f)
    listed = sec.add("list", measure("dpl list-datum -f spec.json -o json", {"cmd": h.dpl_cmd("list-datum", "-f", spec, "-o", "json"),
                                                                                "env": env}, repeat=ctx.repeat))
    dry = sec.add("dry_run", measure("dpl create-pipeline --dry-run -o json", {"cmd": h.dpl_cmd("create-pipeline", spec, "--dry-run", "-o", "json"),
                                                                                  "env": env}, repeat=ctx.repeat))
    sec.limit("list-datum -f, whole CLI call", max(listed.seconds, dry.seconds), at_most=2)
    sec.close()
    shutil.rmtree(scratch, ignore_errors=True)
