"""Pipelines against their peers (issue 3): the local executor and incremental jobs.

    datum_overhead  10,000 trivial datums (`cp /pfs/in/* /pfs/out/`) on the local
                    executor: ms per datum and datums per second
    incremental     1 file changed in a 100,000-file input with glob /*: the whole
                    `dpl put-file` call (job included) vs `dvc repro` of the
                    equivalent DVC stage after the same change
"""

from __future__ import annotations

import json
import os
import shutil
import time

import harness as h
import peers
from harness import Context, measure

BENCHMARKS = {}
CP_STEP = ["sh", "-c", "cp /pfs/in/* /pfs/out/"]


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _spec(path: str, name: str, parallelism: int) -> str:
    spec = {
        "pipeline": {"name": name},
        "transform": {"cmd": CP_STEP},
        "parallelism_spec": {"constant": parallelism},
        "input": {"pfs": {"repo": "data", "glob": "/*", "name": "in"}},
    }
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def flat_files(ctx: Context, n: int) -> str:
    """`n` small files side by side (glob /* makes one datum of each)."""
    root = os.path.join(ctx.data_dir, f"flat-{n}")
    if not os.path.exists(root + ".ok"):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for i in range(n):
            with open(os.path.join(root, f"f{i:07d}.txt"), "wb") as f:
                f.write(os.urandom(256).hex().encode())
        open(root + ".ok", "w").close()
    return root


def _job(store: str, pipeline: str) -> dict:
    from dpl.engine import Store

    s = Store.open(store)
    try:
        return s.list_jobs(pipeline)[0]
    finally:
        s.close()


@benchmark
def datum_overhead(ctx: Context) -> None:
    n = 300 if ctx.quick else 10_000
    src = flat_files(ctx, n)
    sec = ctx.section("pipelines.datum_overhead", f"local executor: {n:,} trivial datums (cp /pfs/in/* /pfs/out/)")
    scratch = ctx.scratch("datums")
    store = h.new_store(os.path.join(scratch, "store"), "data")
    h.dpl("put-file", "-r", "data@master", src, store=store)
    cores = os.cpu_count() or 1
    fig = sec.add("dpl", measure(
        f"dpl create-pipeline (first job, parallelism {cores})",
        {"cmd": h.dpl_cmd("create-pipeline", _spec(os.path.join(scratch, "spec.json"), "copy", cores)), "env": {"DPL_STORE": store}},
        repeat=1,
    ))
    job = _job(store, "copy")
    assert job["processed"] == n, job
    per = fig.seconds / n * 1000
    sec.info("datums per second", f"{n / fig.seconds:,.0f}")
    sec.limit("ms per datum (whole CLI call / datums)", per, at_most=10, unit="ms")
    sec.close()
    shutil.rmtree(scratch, ignore_errors=True)


@benchmark
def incremental(ctx: Context) -> None:
    n = 2_000 if ctx.quick else 100_000
    src = flat_files(ctx, n)
    sec = ctx.section("pipelines.incremental", f"1 file changed in a {n:,}-file input, glob /*: dpl job vs dvc repro")
    scratch = ctx.scratch("incr")
    store = h.new_store(os.path.join(scratch, "store"), "data")
    h.dpl("put-file", "-r", "data@master", src, store=store)
    t = time.perf_counter()
    h.run(h.dpl_cmd("create-pipeline", _spec(os.path.join(scratch, "spec.json"), "copy", os.cpu_count() or 1)), env={"DPL_STORE": store})
    sec.info("first job (untimed set-up)", f"{time.perf_counter() - t:.1f} s for {n:,} datums")

    changed = os.path.join(scratch, "changed.bin")
    first = sorted(os.listdir(src))[0]
    with open(changed, "wb") as f:
        f.write(b"a changed file\n")
    fig = sec.add("dpl", measure(
        "dpl put-file of 1 changed file (the job it starts included)",
        {"cmd": h.dpl_cmd("put-file", f"data@master:/{first}", changed), "env": {"DPL_STORE": store}},
        repeat=1,
    ))
    job = _job(store, "copy")
    sec.info("datums processed / skipped", f"{job['processed']} / {job['skipped']}")
    sec.limit("dpl: whole call after a 1-file change", fig.seconds, at_most=2)

    dvc = peers.find_dvc()
    if dvc is None:
        sec.unavailable("dvc repro", "no dvc executable (bench/run.py repos installs one into bench/data/dvc-venv)")
    else:
        work = os.path.join(scratch, "dvc")
        os.makedirs(work)
        shutil.copytree(src, os.path.join(work, "data"))
        env = dict(peers.DVC_ENV)
        for cmd in (["git", "init", "-q"], [dvc, "init", "-q"],
                    [dvc, "stage", "add", "-q", "-n", "copy", "-d", "data", "-o", "out", "mkdir -p out && cp -r data/. out/"],
                    [dvc, "repro", "-q"]):
            h.run(cmd, cwd=work, env=env)
        shutil.copy(changed, os.path.join(work, "data", first))
        peer = sec.add("dvc", measure("dvc repro after the same change", {"cmd": [dvc, "repro", "-q"], "cwd": work, "env": env}, repeat=1))
        sec.info("dvc repro / dpl", f"{peer.seconds / fig.seconds:.1f} x")
    sec.close()
    shutil.rmtree(scratch, ignore_errors=True)
