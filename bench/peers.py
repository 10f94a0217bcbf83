"""The peers dpl is measured against: git's and DVC's environments, and a dvc to run.

git comes from the machine; dvc is found, or installed from PyPI into a
venv of its own under bench/data (`install_dvc`), never into dpl's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from harness import BENCH_DIR, BIN

# Commits that read no user or system configuration and need no identity.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
DVC_ENV = {"DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1"}


def find_dvc() -> str | None:
    """A dvc executable: $DPL_BENCH_DVC, this venv, the bench's own venv, PATH."""
    for candidate in (
        os.environ.get("DPL_BENCH_DVC"),
        os.path.join(BIN, "dvc"),
        os.path.join(BENCH_DIR, "data", "dvc-venv", "bin", "dvc"),
        shutil.which("dvc"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_dvc(timeout: float = 300) -> tuple[str | None, str]:
    """Install dvc from PyPI into a venv of its own under bench/data.

    Its own venv, not dpl's: dvc pins many libraries (pygit2, dulwich,
    rich...) and is not a dependency of dpl, so it must not move the
    versions dpl is tested with.  Returns (path or None, why not).
    """
    venv = os.path.join(BENCH_DIR, "data", "dvc-venv")
    dvc = os.path.join(venv, "bin", "dvc")
    try:
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=timeout)
        subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "dvc"],
                       check=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"pip install dvc took longer than {timeout:.0f} s"
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        return None, "pip install dvc failed" + (f": {lines[-1]}" if lines else "")
    return (dvc, "") if os.access(dvc, os.X_OK) else (None, "pip installed no dvc executable")
