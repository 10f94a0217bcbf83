"""`dpl serve` under load (issue 14), next to the same work embedded.  Loopback only.

    commits     16 clients (processes, through `dpl.connect`) each make 100
                small commits, vs one embedded process making commits serially;
                target: commits/s through the server >= 0.5 x embedded serial
    reads       16 clients read small files (get-file) while a job runs on the
                server, vs the same reads embedded; target: p99 < 50 ms
    reads_while_committing
                4 clients read small files while the 16 clients of `commits`
                commit; target: get-file p99 < 50 ms under that load
    put_many    one client puts 10,000 small files (one negotiated upload),
                vs the same put embedded

Every client process imports dpl and opens its connection first, then waits
for a shared start time, so imports are not counted.  Each part is bounded
in count (the numbers above; --quick divides them) and in time (a part
stops its clients after `LIMIT` seconds and says so).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time

import harness as h
from harness import Context, Figure, Run
from served import Served

BENCHMARKS = {}
LIMIT = 120.0  # seconds a part may take before its clients stop where they are


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _sizes(ctx: Context) -> dict:
    if ctx.quick:
        return {"clients": 4, "commits": 10, "serial": 40, "reads": 25, "files": 1_000, "job_datums": 8}
    return {"clients": 16, "commits": 100, "serial": 400, "reads": 100, "files": 10_000, "job_datums": 64}


def _server(ctx: Context, store: str) -> Served:
    """`dpl serve` on `store`, its jobs polled every 0.5 s."""
    return Served(store, os.path.join(ctx.scratch("serve-log"), "serve.log"), "--poll", "0.5")


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _in_clients(n: int, work, args: list[tuple]) -> tuple[list[list[float]], float]:
    """Run `work(start_at, deadline, *args[i])` in n processes at once; their latency lists and the wall time."""
    (latencies, wall), = _in_groups([(work, args)])
    return latencies, wall


def _in_groups(groups: list[tuple]) -> list[tuple[list[list[float]], float]]:
    """Every group's `work(start_at, deadline, *args[i])` in a process each, all at once;
    for each group its clients' latency lists and its wall time."""
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 2.0 + 0.1 * sum(len(args) for _, args in groups)  # every client has imported and connected by then
    with ctx.Pool(sum(len(args) for _, args in groups)) as pool:
        pending = [[pool.apply_async(work, (start_at, start_at + LIMIT, *a)) for a in args] for work, args in groups]
        out = []
        for results in pending:
            results = [r.get() for r in results]
            out.append(([r[0] for r in results], max(r[1] for r in results) - start_at))
    return out


# ------------------------------------------------------------------ clients


def _committer(start_at: float, deadline: float, url: str, repo: str, n: int) -> tuple[list[float], float]:
    import dpl

    store = dpl.connect(url)
    store.inspect_repo(repo)  # the connection is open before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    for i in range(n):
        if time.time() > deadline:
            break
        began = time.perf_counter()
        store.put_bytes(repo, "master", {f"/c{i:04d}.txt": f"commit {i} of {repo}\n".encode()})
        latencies.append(time.perf_counter() - began)
    return latencies, time.time()


def _reader(start_at: float, deadline: float, url: str, repo: str, paths: list[str]) -> tuple[list[float], float]:
    import dpl

    store = dpl.connect(url)
    store.read_file(repo, "master", paths[0])
    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    for path in paths:
        if time.time() > deadline:
            break
        began = time.perf_counter()
        store.read_file(repo, "master", path)
        latencies.append(time.perf_counter() - began)
    return latencies, time.time()


def _figure(label: str, wall: float, note: str = "") -> Figure:
    return Figure(label, [Run(wall, 0)], note=note)


def _latencies(sec, label: str, latencies: list[float]) -> tuple[float, float]:
    p50, p99 = _percentiles(latencies)
    sec.info(f"{label} latency p50 / p99", f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms  ({len(latencies)} requests)")
    return p50, p99


# --------------------------------------------------------------- benchmarks


@benchmark
def commits(ctx: Context) -> None:
    from dpl.engine import Store

    size = _sizes(ctx)
    sec = ctx.section("server.commits", f"{size['clients']} clients x {size['commits']} small commits through dpl serve, "
                                        "vs one embedded process committing serially")
    # Embedded: one process, one writer, the same small commits one after another.
    path = h.new_store(os.path.join(ctx.scratch("commits-embedded"), "store"), "serial", metadata=ctx.new_metadata())
    store = Store.open(path)
    latencies = []
    began = time.perf_counter()
    for i in range(size["serial"]):
        t = time.perf_counter()
        store.put_bytes("serial", "master", {f"/c{i:04d}.txt": f"commit {i}\n".encode()})
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - began
    store.close()
    embedded_rate = size["serial"] / wall
    sec.add("embedded", _figure(f"embedded serial: {size['serial']} commits", wall, f"{embedded_rate:.0f} commits/s"))
    _latencies(sec, "embedded commit", latencies)

    repos = [f"c{i:02d}" for i in range(size["clients"])]
    path = h.new_store(os.path.join(ctx.scratch("commits-served"), "store"), *repos, metadata=ctx.new_metadata())
    server = _server(ctx, path)
    try:
        per_client, wall = _in_clients(size["clients"], _committer, [(server.url, r, size["commits"]) for r in repos])
    finally:
        server.stop()
    made = sum(len(x) for x in per_client)
    served_rate = made / wall
    cut = "" if made == size["clients"] * size["commits"] else f"; stopped at {LIMIT:g} s"
    sec.add("served", _figure(f"served: {size['clients']} clients, {made} commits", wall, f"{served_rate:.0f} commits/s{cut}"))
    _latencies(sec, "served commit", [x for c in per_client for x in c])
    sec.info("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" + _cpu_pressure())
    sec.ratio("served commits/s / embedded serial", served_rate / embedded_rate, at_least=0.5)
    sec.close()


SLOW_JOB = {
    "pipeline": {"name": "busy"},
    "transform": {"cmd": ["sh", "-c", "sleep 0.2; cp -r /pfs/jobin/* /pfs/out/"]},
    "input": {"pfs": {"repo": "jobin", "glob": "/*"}},
}


@benchmark
def reads(ctx: Context) -> None:
    from dpl.engine import Store

    size = _sizes(ctx)
    sec = ctx.section("server.reads", f"{size['clients']} clients x {size['reads']} small get-files while a job runs, "
                                      "vs the same reads embedded")
    path = h.new_store(os.path.join(ctx.scratch("reads"), "store"), "small", "jobin", metadata=ctx.new_metadata())
    store = Store.open(path)
    files = {f"/f{i:04d}.txt": os.urandom(512) for i in range(500)}
    store.put_bytes("small", "master", files)
    store.create_pipeline(json.dumps(SLOW_JOB))
    store.close()
    names = sorted(files)
    plan = [[names[(c * 37 + i) % len(names)] for i in range(size["reads"])] for c in range(size["clients"])]

    store = Store.open(path)
    latencies = []
    began = time.perf_counter()
    for paths in plan:
        for p in paths:
            t = time.perf_counter()
            store.read_file("small", "master", p)
            latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - began
    store.close()
    sec.add("embedded", _figure(f"embedded serial: {len(latencies)} reads", wall, f"{len(latencies) / wall:.0f} reads/s"))
    _latencies(sec, "embedded get-file", latencies)

    server = _server(ctx, path)
    try:
        import dpl

        remote = dpl.connect(server.url)
        # A job with work for longer than the reads take: its datums run while the clients read.
        remote.put_bytes("jobin", "master", {f"/d{i:03d}": b"x" * 100 for i in range(size["job_datums"])})
        job_running = _wait_running(remote)
        per_client, wall = _in_clients(size["clients"], _reader, [(server.url, "small", paths) for paths in plan])
        still = [j["state"] for j in remote.list_jobs("busy", limit=1)]
        remote.close()
    finally:
        server.stop()
    done = sum(len(x) for x in per_client)
    sec.add("served", _figure(f"served: {size['clients']} clients, {done} reads", wall, f"{done / wall:.0f} reads/s"))
    sec.info("the job during the reads", f"running at the start: {job_running}; at the end: {still[0] if still else '?'}")
    _, p99 = _latencies(sec, "served get-file", [x for c in per_client for x in c])
    sec.info("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" + _cpu_pressure())
    sec.limit("p99 of a small get-file under load", p99, at_most=0.05)
    sec.close()


@benchmark
def reads_while_committing(ctx: Context) -> None:
    size = _sizes(ctx)
    readers = max(2, size["clients"] // 4)
    sec = ctx.section("server.reads_while_committing", f"{readers} clients x {size['reads'] * 2} small get-files while "
                                                       f"{size['clients']} clients x {size['commits']} small commits go through the same server")
    repos = [f"c{i:02d}" for i in range(size["clients"])]
    path = h.new_store(os.path.join(ctx.scratch("reads-committing"), "store"), "small", *repos, metadata=ctx.new_metadata())
    from dpl.engine import Store

    store = Store.open(path)
    files = {f"/f{i:04d}.txt": os.urandom(512) for i in range(500)}
    store.put_bytes("small", "master", files)
    store.close()
    names = sorted(files)
    plan = [[names[(c * 37 + i) % len(names)] for i in range(size["reads"] * 2)] for c in range(readers)]
    server = _server(ctx, path)
    try:
        (commit_lat, commit_wall), (read_lat, read_wall) = _in_groups([
            (_committer, [(server.url, r, size["commits"]) for r in repos]),
            (_reader, [(server.url, "small", paths) for paths in plan]),
        ])
    finally:
        server.stop()
    made = sum(len(x) for x in commit_lat)
    sec.add("commits", _figure(f"served: {size['clients']} clients, {made} commits", commit_wall, f"{made / commit_wall:.0f} commits/s"))
    _latencies(sec, "served commit", [x for c in commit_lat for x in c])
    done = sum(len(x) for x in read_lat)
    sec.add("reads", _figure(f"served: {readers} clients, {done} reads", read_wall, f"{done / read_wall:.0f} reads/s"))
    _, p99 = _latencies(sec, "served get-file under commits", [x for c in read_lat for x in c])
    sec.info("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" + _cpu_pressure())
    sec.limit(f"p99 of a small get-file while {size['clients']} clients commit", p99, at_most=0.05)
    sec.close()


def _cpu_pressure() -> str:
    """The share of the last minute in which runnable tasks waited for a CPU (Linux PSI):
    on a shared machine, what a p99 mostly measures when it is high."""
    try:
        with open("/proc/pressure/cpu") as f:
            some = dict(kv.split("=") for kv in f.readline().split()[1:])
        return f"; CPU pressure {float(some['avg60']):.0f}% of the last minute"
    except (OSError, KeyError, ValueError):
        return ""


def _wait_running(remote, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(j["state"] == "running" for j in remote.list_jobs("busy", limit=5)):
            return True
        time.sleep(0.05)
    return False


@benchmark
def put_many(ctx: Context) -> None:
    from dpl.engine import Store
    from dpl.engine.files import Source

    size = _sizes(ctx)
    n = size["files"]
    sec = ctx.section("server.put_many", f"one client puts {n:,} small files (one commit), vs the same put embedded")
    tree = os.path.join(ctx.scratch("put-tree"), "tree")
    for i in range(n):
        sub = os.path.join(tree, f"d{i // 1000:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.txt"), "wb") as f:
            f.write(f"file {i}\n".encode() * 8)

    path = h.new_store(os.path.join(ctx.scratch("put-embedded"), "store"), "many", metadata=ctx.new_metadata())
    store = Store.open(path)
    began = time.perf_counter()
    store.put_files("many", "master", [Source(tree, "/")])
    embedded = time.perf_counter() - began
    store.close()
    sec.add("embedded", _figure(f"embedded: put {n:,} files", embedded, f"{n / embedded:.0f} files/s"))

    path = h.new_store(os.path.join(ctx.scratch("put-served"), "store"), "many", metadata=ctx.new_metadata())
    server = _server(ctx, path)
    try:
        import dpl

        remote = dpl.connect(server.url)
        remote.list_repos()
        began = time.perf_counter()
        commit = remote.put_files("many", "master", [Source(tree, "/")])
        served = time.perf_counter() - began
        remote.close()
    finally:
        server.stop()
    assert commit.nfiles == n, commit
    sec.add("served", _figure(f"served: put {n:,} files", served, f"{n / served:.0f} files/s"))
    sec.info("served / embedded time", f"{served / embedded:.2f} x")
    sec.close()
