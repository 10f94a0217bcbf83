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
