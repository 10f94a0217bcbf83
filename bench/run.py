"""Run dpl's benchmarks against their peers and print every figure and ratio.

    python bench/run.py                      every benchmark at full size
    python bench/run.py repos                one module (bench/bench_repos.py)
    python bench/run.py repos.big_file       one benchmark of a module
    python bench/run.py --quick repos        small sizes: a smoke run in seconds
    python bench/run.py small --metadata postgresql://USER:PW@HOST:PORT/postgres
                                             metadata in PostgreSQL (a database per store)

`DPL_BENCH_QUICK=1` is the same as `--quick`.  Results are also written as
JSON to bench/results/ (gitignored).  The exit code is 0 whether or not a
target is met (pass --strict to fail on a missed target), non-zero when a
command failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import harness as h  # noqa: E402
import peers  # noqa: E402


def modules() -> list[str]:
    return sorted(f[len("bench_") : -3] for f in os.listdir(BENCH_DIR) if f.startswith("bench_") and f.endswith(".py"))


def select(names: list[str]) -> list[tuple[str, str, object]]:
    """(module, benchmark, function) for each name: `mod` or `mod.bench`."""
    chosen = []
    for name in names or modules():
        mod_name, _, bench = name.partition(".")
        if mod_name not in modules():
            raise SystemExit(f"error: no benchmark module {mod_name!r} (have: {', '.join(modules())})")
        mod = importlib.import_module(f"bench_{mod_name}")
        if bench and bench not in mod.BENCHMARKS:
            raise SystemExit(f"error: {mod_name} has no benchmark {bench!r} (have: {', '.join(mod.BENCHMARKS)})")
        for key, fn in mod.BENCHMARKS.items():
            if not bench or key == bench:
                chosen.append((mod_name, key, fn))
    return chosen


def install() -> str:
    """How the dpl under test is installed: setuptools' editable finder costs every call ~30 ms
    that a user's `pip install dpl` does not (tests/services/venv.sh replaces it with a link)."""
    import glob
    import sysconfig

    site = sysconfig.get_paths()["purelib"]  # the bench runs on the Python dpl is installed in
    for pth in glob.glob(os.path.join(site, "__editable__.dpl-*.pth")):
        with open(pth) as f:
            if f.read().startswith("import"):
                return "editable finder: each call pays ~30 ms a pip install does not; run tests/services/venv.sh"
        return "linked checkout, found as an installed package is"
    return "installed"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="modules (repos) or benchmarks (repos.big_file); default all")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DPL_BENCH_QUICK", "") not in ("", "0"),
                        help="small sizes and one repetition: a smoke run")
    parser.add_argument("--repeat", type=int, help="repetitions of each timed command (median reported)")
    parser.add_argument("--data", default=os.environ.get("DPL_BENCH_DATA", os.path.join(BENCH_DIR, "data")),
                        help="where generated data and scratch stores live (default bench/data)")
    parser.add_argument("--results", default=os.path.join(BENCH_DIR, "results"), help="where to write the JSON results")
    parser.add_argument("--no-install", action="store_true", help="never pip-install dvc; use it only if present")
    parser.add_argument("--metadata", default=os.environ.get("DPL_BENCH_METADATA") or None,
                        help="keep the stores' metadata in PostgreSQL: postgresql://USER:PASSWORD@HOST:PORT/DB, a server"
                             " where each store gets a database of its own (default: SQLite)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    chosen = select(args.names)
    ctx = h.Context(quick=args.quick, data_dir=args.data, repeat=args.repeat, metadata=args.metadata)
    ctx.dvc = peers.find_dvc()
    ctx.dvc_why = "no dvc executable found"
    if ctx.dvc is None and not (args.quick or args.no_install) and any(m == "repos" for m, _, _ in chosen):
        h.say("(dvc is not installed: trying `pip install dvc` into bench/data/dvc-venv)")
        ctx.dvc, why = peers.install_dvc()
        ctx.dvc_why = why or ctx.dvc_why

    h.say(f"dpl benchmarks ({'quick' if ctx.quick else 'full'} sizes, {ctx.repeat} run(s) each, median shown)")
    h.say(f"machine: {machine()}")
    h.say(f"data:    {ctx.data_dir}")
    h.say(f"dpl:     {h.DPL} ({install()})")
    h.say(f"dvc:     {ctx.dvc or 'unavailable (' + ctx.dvc_why + ')'}")
    h.say(f"metadata: {h.redact(ctx.metadata) or 'SQLite (the default)'}")
    h.say("python:  bytecode cache on for every command (PYTHONDONTWRITEBYTECODE unset, as in a pip install)")
    started = time.time()
    try:
        h.warm_up(ctx)
        for mod_name, key, fn in chosen:
            try:
                fn(ctx)
            finally:
                ctx.cleanup()
    except h.CommandFailed as e:
        h.say(f"\nerror: a benchmark command failed: {e}")
        return 2

    ratios = [(r["name"], x) for r in ctx.results for x in r["ratios"]]
    h.say("\n== summary")
    for name, x in ratios:
        unit = x.get("unit", "x")
        h.say(f"  {'OK    ' if x['ok'] else 'MISSED'} {name:<20} {x['label']:<48} {x['value']:8.3f} {unit}"
              f"  ({'<=' if x['at_most'] else '>='} {x['limit']:g})")
    h.say(f"  ({time.time() - started:.0f} s in all)")

    os.makedirs(args.results, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join(args.results, f"bench-{stamp}{'-quick' if ctx.quick else ''}.json")
    with open(out, "w") as f:
        json.dump({"machine": machine(), "quick": ctx.quick, "repeat": ctx.repeat, "started": started,
                   "results": ctx.results}, f, indent=2)
    h.say(f"  results: {out}")
    missed = [x for _, x in ratios if not x["ok"]]
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
