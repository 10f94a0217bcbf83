"""Small commands answered without the command line's machinery.

Typer and click cost ~55 ms of imports, half of what `dpl list-repo` may take
in all (issue 12: 0.1 s).  The commands here are parsed by hand when they are
called in the plain forms a script uses; anything else (`--help`, an option
spelled another way, a mistake) goes to the typer app, which prints its
usage and errors as always.  Each command makes the same engine call and
renders through the same `render` functions and columns as its typer twin,
so the bytes printed are the same (tests/test_small_ops.py compares them).
"""

from __future__ import annotations

import os
import sys

from . import render
from .render import Output, ago, size

# The columns of `dpl list-repo`, as cli/main.py's list_repo prints them.
REPO_COLUMNS = [("name", "NAME", None), ("size", "SIZE (MASTER)", size), ("files", "FILES", None),
                ("commits", "COMMITS", None), ("last_commit", "LAST COMMIT", ago), ("description", "DESCRIPTION", None)]


def run(argv: list[str]) -> bool:
    """Run `argv` here if it is a command this module answers; False if not."""
    if not argv or argv[0] not in COMMANDS:
        return False
    options = _output_option(argv[1:])
    if options is None:
        return False
    from ..client.config import address

    if address(None) is not None:  # DPL_ADDRESS or `dpl connect`: the server answers, through the app
        return False
    with _errors_reported():
        COMMANDS[argv[0]](options)
    return True


def _output_option(rest: list[str]) -> Output | None:
    """`-o json`, `--output=table`, ...: the one option of a read command; None
    for anything else (typer then parses it, and reports what is wrong)."""
    if not rest:
        return Output.table
    if len(rest) == 2 and rest[0] in ("-o", "--output"):
        value = rest[1]
    elif len(rest) == 1 and rest[0].startswith("--output="):
        value = rest[0].partition("=")[2]
    else:
        return None
    return Output(value) if value in ("table", "json") else None


def _list_repo(output: Output) -> None:
    from ..engine import Store

    render.table(Store.open().list_repos(), REPO_COLUMNS, output)


COMMANDS = {"list-repo": _list_repo}


class _errors_reported:
    """User errors as one sentence and an exit code, as cli/main.py's `run` does."""

    def __enter__(self):
        import logging

        logging.basicConfig(format="note: %(message)s", level=logging.WARNING)

    def __exit__(self, kind, e, tb):
        from ..storage.errors import DplError

        if kind is None:
            return False
        if isinstance(e, DplError):
            sys.stderr.write(f"error: {e.message}\n")
            if e.hint:
                sys.stderr.write(f"hint: {e.hint}\n")
            sys.exit(e.exit_code)
        if isinstance(e, BrokenPipeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if isinstance(e, OSError):
            import errno

            if e.errno == errno.ENOSPC:
                sys.stderr.write("error: The disk is full; nothing was committed.\nhint: Free some space and run the command again.\n")
            else:
                sys.stderr.write(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "") + "\n")
            sys.exit(1)
        return False
