"""The dpl command line: a thin typer skin over the engine.

`run` is the console entry point.  `dpl --version` is answered here, and
the small commands of `fast` there, before the command line's machinery
(typer, ~55 ms of imports, more than the whole answer may take) is
imported; every other call goes to `main.run`.  Every command runs with
pandas hidden from pyarrow (lean.py).
"""

from __future__ import annotations

import os
import sys


def run() -> None:
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(f"dpl {version()}\n")
        return
    from . import fast
    from .lean import hidden

    with hidden("pandas"):  # see lean.py
        if fast.run(sys.argv[1:]):
            return
        from .main import run as run_command

        run_command()


def version() -> str:
    """dpl's installed version, read from its dist-info as importlib.metadata
    would (which costs ~40 ms of imports: a third of a small command)."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("dpl-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as f:
                        for line in f:
                            if line.startswith("Version:"):
                                return line.partition(":")[2].strip()
                except OSError:
                    break
    from importlib.metadata import version

    return version("dpl")
