"""The console on big data (issue 16): a job of N datums and a directory of N files
open on their first page in under 300 ms, server time plus first paint, in a browser.

    first_page  a store with two jobs of N datums (one in 100 failed, with a log tail
                each; and 3 failed, whose first page must find them among N) and a
                directory of N files, served by `dpl serve`; Debian's chromium
                (Playwright) opens the job pages and the directory page LOADS times each,
                after two untimed loads: the first fills the browser's cache of the
                assets and is the server's first use of the page (its templates are
                compiled then; reported on its own), the second lets chromium keep the
                scripts' compiled code, as it has for anyone who opened two pages of
                the console before.  Each load's
                figure is first contentful paint from navigation start, so it holds the
                request, the server's answer and the browser's work.  Reported: median
                and p90 (nearest rank) of paint, and the median server time
                (responseStart - requestStart); targets: median and p90 < 300 ms.
                N is DPL_BENCH_CONSOLE_N (100,000; 3,000 with --quick), LOADS is
                DPL_BENCH_CONSOLE_LOADS (10; 5 with --quick).

The files are put as a user puts them.  The job's datum rows and datum list are
written through the metadata layer and the chunk store, as the job runner
records them (tests/test_console.py's `big` fixture does the same): running N
sandboxes would take minutes and measure the executor, not the console.

    python bench/run.py console
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
import uuid

from harness import Context, Figure, Run
from served import Served

BENCHMARKS = {}
CHROMIUM = "/usr/bin/chromium"
TARGET = 0.3  # seconds, first paint of a first page


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def build(root: str, n: int, metadata: str | None = None) -> str:
    """A store with a directory /dir of n files in repo `big` and a failed job of n datums
    of pipeline `wide`, one in 100 failed; returns the job's id."""
    from dpl.engine import Store

    s = Store.init(root, durable=False, metadata=metadata)
    try:
        s.create_repo("big")
        s.put_bytes("big", "master", {f"/dir/f{i:06d}.txt": b"%d\n" % i for i in range(n)})
        s.create_repo("quiet")  # never committed to: the pipeline's only jobs are the ones written here
        s.create_pipeline(json.dumps({"pipeline": {"name": "wide"}, "input": {"pfs": {"repo": "quiet", "glob": "/*"}},
                                      "transform": {"cmd": ["true"]}}))
        return _job(s, n, lambda i: i % 100 == 7)
    finally:
        s.close()


def add_job(root: str, n: int, failed: int) -> str:
    """Another job of `wide` with n datums, `failed` of them failed (spread evenly); returns its id."""
    from dpl.engine import Store

    s = Store.open(root)
    try:
        return _job(s, n, lambda i: i % (n // failed) == 7 and i // (n // failed) < failed)
    finally:
        s.close()


def _job(s, n: int, fails) -> str:
    import pyarrow as pa

    from dpl.engine.jobrun import DATUM_LIST_SCHEMA
    from dpl.storage import index
    from dpl.storage.metadata import datums as datum_rows
    from dpl.storage.metadata import jobs as job_rows

    job, now = uuid.uuid4().hex, time.time()
    ids = [hashlib.blake2b(b"%d" % i, digest_size=16).digest() for i in range(n)]
    keys = [f"big:/dir/f{i:06d}.txt" for i in range(n)]
    states = ["failed" if fails(i) else "success" for i in range(n)]
    runs = [datum_rows.Datum(pipeline="wide", job=job, datum=d.hex(), key=k, state=st, reason="new input",
                             started=now + i / 1000, finished=now + i / 1000 + 0.02, tries=3 if st == "failed" else 1,
                             exit_code=1 if st == "failed" else 0, stdout="",
                             stderr=f"step log line\nboom on {k}\n" if st == "failed" else "",
                             error="exit code 1" if st == "failed" else None, outputs=0 if st == "failed" else 1,
                             inputs_json=json.dumps([{"name": "big", "repo": "big", "commit": "0" * 32, "path": k[4:], "files": []}]))
            for i, (d, k, st) in enumerate(zip(ids, keys, states))]
    listing = pa.table({"datum": pa.array(ids, pa.binary(16)), "key": keys, "state": states}, schema=DATUM_LIST_SCHEMA)
    failed = states.count("failed")
    with s.db.write() as tx:
        job_rows.insert_created(tx, job, "wide", 1, "new input", now)
        job_rows.claim(tx, "wide", job, "bench", now)
        job_rows.set_plan(tx, "wide", job, salt="", executor={"kind": "local"}, code={}, total=n)
        datum_rows.record(tx, runs, [], [])
        job_rows.set_outcome(tx, "wide", job, datum_list=index.write_table(s.chunks, listing).hex(), processed=n - failed,
                             skipped=0, failed=failed)
        job_rows.fail(tx, "wide", job, "bench", now + 60, f"{failed} datums failed")
    return job


_TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  return {server: nav.responseStart - nav.requestStart, paint: paint.startTime};
}"""


def _load(pg, url: str) -> dict:
    """One navigation: its server time and first contentful paint, in ms."""
    pg.goto(url)
    pg.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
    timing = pg.evaluate(_TIMING)
    # What a page fetches once it has painted (a job's reasons count) ends before the next load.
    pg.wait_for_function("!document.querySelector('[hx-trigger=load]')", timeout=60_000)
    return timing


def p90(values: list[float]) -> float:
    """The nearest-rank 90th percentile: the value 90% of the loads were at or under."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@benchmark
def first_page(ctx: Context) -> None:
    n = int(os.environ.get("DPL_BENCH_CONSOLE_N") or (3_000 if ctx.quick else 100_000))
    loads = int(os.environ.get("DPL_BENCH_CONSOLE_LOADS") or (5 if ctx.quick else 10))
    sec = ctx.section("console.first_page", f"a job of {n:,} datums and a directory of {n:,} files, first page in chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sec.unavailable("first paint", "Playwright is not installed (the test extra)")
        sec.close()
        return
    if not os.path.exists(CHROMIUM):
        sec.unavailable("first paint", f"{CHROMIUM} is missing (apt-get install chromium)")
        sec.close()
        return
    scratch = ctx.scratch("console")
    started = time.perf_counter()
    job = build(os.path.join(scratch, "store"), n, ctx.new_metadata())
    sparse = add_job(os.path.join(scratch, "store"), n, 3)
    sec.info("store built (untimed)", f"{time.perf_counter() - started:.1f} s")
    server = Served(os.path.join(scratch, "store"), os.path.join(scratch, "serve.log"))
    pages = {"job": (f"job page ({n:,} datums, 1% failed)", f"/jobs/{job}?pipeline=wide"),
             "sparse": (f"job page ({n:,} datums, 3 failed)", f"/jobs/{sparse}?pipeline=wide"),
             "dir": (f"directory page ({n:,} files)", "/repos/big/tree?path=/dir")}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                pg = browser.new_context().new_page()
                for key, (label, path) in pages.items():
                    cold = _load(pg, server.url + path)
                    _load(pg, server.url + path)
                    timings = [_load(pg, server.url + path) for _ in range(loads)]
                    paints = [t["paint"] / 1000 for t in timings]
                    fig = sec.add(key, Figure(f"{label}: first paint", [Run(x, 0) for x in paints],
                                              note=f"p90 {p90(paints) * 1000:.0f} ms"))
                    sec.info(f"{key}: server time, median", f"{statistics.median(t['server'] for t in timings):.0f} ms")
                    sec.info(f"{key}: first load (cold)", f"paint {cold['paint']:.0f} ms, server {cold['server']:.0f} ms")
                    sec.limit(f"{label}: first paint, median", fig.seconds, at_most=TARGET)
                    sec.limit(f"{label}: first paint, p90", p90(paints), at_most=TARGET)
            finally:
                browser.close()
    finally:
        server.stop()
    sec.close()
