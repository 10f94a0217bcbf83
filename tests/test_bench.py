"""The benchmarks still run: each quick run prints its figures and ratios.

No timing is asserted here (a loaded test machine proves nothing about
speed); `make bench` is where the figures are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "run.py")


@pytest.mark.timeout(900)
def test_repo_benchmarks_run_and_print_their_figures(tmp_path):
    proc = subprocess.run(
        [sys.executable, BENCH, "--quick", "--no-install", "--data", str(tmp_path / "data"),
         "--results", str(tmp_path / "results"), "repos"],
        capture_output=True, text=True, timeout=880,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for section in ("repos.small_files", "repos.big_file", "repos.list_diff", "repos.big_head"):
        assert f"== {section}:" in out
    for line in ("cp -r", "git add -A && git commit", "dpl put-file -r", "dpl get-file -o", "dpl diff-file",
                 "ratio dpl put-file -r / cp -r", "limit dpl put-file -r peak RSS"):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "dvc add" in out  # measured, or said to be unavailable
    [saved] = (tmp_path / "results").iterdir()
    results = json.loads(saved.read_text())["results"]
    assert {r["name"] for r in results} == {"repos.small_files", "repos.big_file", "repos.list_diff", "repos.big_head"}
    assert all(f["seconds"] > 0 for r in results for f in r["figures"].values())


def test_an_unknown_benchmark_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--data", str(tmp_path), "repos.nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no benchmark 'nope'" in proc.stderr


@pytest.mark.timeout(900)
def test_small_operation_benchmarks_run_and_print_their_figures(tmp_path):
    proc = subprocess.run(
        [sys.executable, BENCH, "--quick", "--no-install", "--data", str(tmp_path / "data"),
         "--results", str(tmp_path / "results"), "small"],
        capture_output=True, text=True, timeout=880,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for section in ("small.startup", "small.put_file", "small.commits", "small.under_load"):
        assert f"== {section}:" in out
    for line in ("dpl --version", "git --version", "dpl list-repo  (empty store)", "git status", "git add + git commit",
                 "limit dpl put-file (1 file)", "ratio single-writer commits/s / 100", "ratio 8 threads commits/s / serial",
                 "ratio 8 processes commits/s / serial", "limit dpl list-file -r REPO@master under load"):
        assert line in out, f"{line!r} missing from:\n{out}"
    [saved] = (tmp_path / "results").iterdir()
    results = {r["name"]: r for r in json.loads(saved.read_text())["results"]}
    commits = results["small.commits"]["figures"]
    assert all(f["seconds"] > 0 and f["cpu"] > 0 for f in commits.values())
    assert "160 commits" in commits["procs"]["note"]  # 8 writers x 20, every one landed


# What the small benchmarks time, held as properties that do not depend on
# how loaded the test machine is: which modules a command imports.

IMPORTS = """
import sys
sys.argv = ["dpl", *sys.argv[1:]]
from dpl.cli import run
try:
    run()
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("pyarrow", "numpy", "rich", "typer", "dpl", "importlib"))), file=sys.stderr)
"""


def _imported(*args, store=None) -> set[str]:
    env = dict(os.environ, **({"DPL_STORE": str(store)} if store else {}))
    proc = subprocess.run([sys.executable, "-c", IMPORTS, *args], capture_output=True, text=True, env=env, timeout=120)
    return set(proc.stderr.split())


def test_dpl_version_imports_neither_the_engine_nor_pyarrow():
    mods = _imported("--version")
    assert "dpl.cli" in mods  # the probe works
    assert "dpl.cli.main" not in mods and "typer" not in mods, mods  # nor the command line's machinery
    assert not any(m.startswith("dpl.engine") for m in mods), mods
    assert {m for m in mods if m.startswith("dpl.storage")} <= {"dpl.storage", "dpl.storage.errors"}, mods
    assert not {"pyarrow", "numpy", "rich", "importlib.metadata"} & mods


def test_one_command_is_built_yet_help_and_typos_see_them_all(tmp_path):
    from dplcli import dpl

    assert "Usage: dpl list-repo" in dpl("list-repo", "--help").stdout.decode()
    assert "put-file" in dpl("--help").stdout.decode() and "create-pipeline" in dpl("--help").stdout.decode()
    typo = dpl("list-rep", check=False)
    assert typo.returncode == 2 and "list-repo" in typo.stderr.decode()
    dpl("init", tmp_path / "store")
    assert dpl("--version", "list-repo", store=tmp_path / "store").stdout.decode().startswith("dpl ")


def test_the_cli_knows_which_module_defines_each_command():
    """`dpl` imports a command module only when one of its commands runs, by
    a table in cli/commands.py: it must name exactly what each module registers."""
    import typer

    from dpl.cli import commands, main

    table = commands.MODULE_COMMANDS
    for name, names in table.items():
        app = typer.Typer()
        commands.command_module(name).register(app)
        assert tuple(c.name for c in app.registered_commands) == names, name
    own = {c.name or c.callback.__name__.replace("_", "-") for c in main.app.registered_commands if c.callback.__module__ == main.__name__}
    assert not own & {c for names in table.values() for c in names}
