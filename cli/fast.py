"""Small commands answered without the command line's machinery.

Typer and click cost ~55 ms of imports, half of what `dpl list-repo` may take
in all (issue 12: 0.1 s), and a sixth of a 1-file `put-file`.  The commands
here (list-repo, list-file, diff-file, put-file) are parsed by hand when
they are called in the plain forms a script uses; anything else (`--help`,
an option spelled another way, a mistake, a server address, a put-file
whose progress a person watches) goes to the typer app, which prints its
usage and errors as always.  Each command makes the same engine calls and
renders through the same `render` functions and columns as its twin in
cli/main.py, so the bytes printed are the same: tests/test_small_ops.py
compares them, and must be kept passing when a twin changes.
"""

from __future__ import annotations

import os
import sys

from . import render
from .lean import hidden, when_imported
from .render import Output, ago, size

# The columns of `dpl list-repo`, as cli/main.py's list_repo prints them.
REPO_COLUMNS = [("name", "NAME", None), ("size", "SIZE (MASTER)", size), ("files", "FILES", None),
                ("commits", "COMMITS", None), ("last_commit", "LAST COMMIT", ago), ("description", "DESCRIPTION", None)]


def run(argv: list[str]) -> bool:
    """Run `argv` here if it is a command this module answers; False if not."""
    if not argv or argv[0] not in COMMANDS:
        return False
    command, flags, positionals, shows_progress = COMMANDS[argv[0]]
    if shows_progress and sys.stderr.isatty():
        return False
    parsed = _parse(argv[1:], flags, positionals)
    if parsed is None or (argv[0] == "put-file" and any("://" in a for a in parsed[0][1:])):
        return False  # a URL to fetch: typer's put-file stages it (engine/fetching.py)
    from ..client.config import address

    if address(None) is not None:  # DPL_ADDRESS or `dpl connect`: the server answers, through the app
        return False
    with _errors_reported():
        command(*parsed)
    return True


def _parse(rest: list[str], flags: dict[str, str], positionals: range):
    """(arguments, options given, output) for the plain forms of a command:
    its flags and options (`flags`: spelling -> name, a name ending in `=`
    takes a value; `output=` is `-o/--output table|json`), and arguments
    that are not options (`-` is one: stdin).  None for anything
    else (typer then parses it, and reports what is wrong)."""
    args, given, output = [], {}, Output.table
    i = 0
    while i < len(rest):
        a = rest[i]
        spelled, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        name = flags.get(spelled)
        if name is None:
            if a.startswith("-") and a != "-":
                return None
            args.append(a)
            i += 1
            continue
        if not name.endswith("="):
            if eq:
                return None
            given[name] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(rest):
            value, i = rest[i + 1], i + 2
        else:
            return None
        if name == "output=":
            if value not in ("table", "json"):
                return None
            output = Output(value)
        else:
            given[name[:-1]] = value
    if len(args) not in positionals:
        return None
    return args, given, output


def _store():
    from ..engine import Store

    return Store.open()


def _reader():
    """The store's file reader, made as `Files` makes its own: `Store.files`
    would import engine/files.py, the writing half, whose modules a listing
    never uses."""
    from ..engine.reading import FileReader

    s = _store()
    return FileReader(s.chunks, s.repos)


def _list_repo(args, flags, output: Output) -> None:
    render.table(_store().list_repos(), REPO_COLUMNS, output)


def _list_file(args, flags, output: Output) -> None:
    from ..engine import refs

    with hidden("numpy", "cloudpickle"):
        ref = refs.parse(args[0], default_path="/")
        entries = _reader().list_files(ref.repo, ref.ref_or_default, ref.path, recursive="recursive" in flags)
        render.table(entries, FILE_COLUMNS, output)


def _diff_file(args, flags, output: Output) -> None:
    from ..engine import refs

    with hidden("numpy", "cloudpickle"):
        a = refs.parse(args[0])
        b = refs.parse(args[1]) if len(args) > 1 else None
        diff = _reader().diff_files(a.repo, a.ref_or_default, b.repo if b else None, b.ref_or_default if b else None)
        path = a.path or (b.path if b else None)
        if path:
            from ..engine.files import within

            diff = within(diff, path)
        render.table(diff, DIFF_COLUMNS, output)


# The columns of cli/main.py's list-file and diff-file.
FILE_COLUMNS = [("path", "NAME", None), ("type", "TYPE", None), ("size", "SIZE", size), ("hash", "HASH", None)]
DIFF_COLUMNS = [("change", "CHANGE", None), ("path", "PATH", None), ("old_size", "OLD SIZE", size), ("new_size", "NEW SIZE", size)]

def _put_file(args, options, output: Output) -> None:
    """cli/main.py's put_file, for a caller that is not watching a terminal
    (the progress line is typer's path)."""
    # As cli/main.py does: numpy (which chunking loads) would start one
    # OpenBLAS thread per core on every call, for nothing.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ..engine import refs
    from ..engine.sources import plan_sources
    from ..engine.uploads import put_small

    target, sources = args[0], args[1:]
    ref = refs.parse(target)
    dest = ref.path
    if dest not in (None, "/") and target.endswith("/"):
        dest += "/"  # a directory to put into, as `cp f dir/` (parsing dropped the slash)
    s = _store()
    plans = plan_sources(dest, sources, recursive="recursive" in options)
    # A few small files go in without pyarrow (~0.15 s of imports, most of such a call).
    commit = None if "append" in options else put_small(s, ref.repo, ref.ref_or_default, plans,
                                                         description=options.get("message", ""))
    if commit is None:
        commit = s.put_files(ref.repo, ref.ref_or_default, plans, append="append" in options,
                             description=options.get("message", ""), progress=None)
    state = "added to open commit" if commit.state == "open" else "committed"
    render.info(f"{state} {ref.repo}@{commit.id} ({commit.nfiles} files, {size(commit.size)})")
    if commit.state == "finished" and "no_wait" not in options:
        from .jobreport import run_and_report

        run_and_report(s, commit.id, options.get("executor"))


# name -> (command, its options, how many arguments it takes, whether a terminal's caller gets typer's path)
_OUTPUT = {"-o": "output=", "--output": "output="}
COMMANDS = {
    "list-repo": (_list_repo, _OUTPUT, range(0, 1), False),
    "list-file": (_list_file, {"-r": "recursive", "--recursive": "recursive"} | _OUTPUT, range(1, 2), False),
    "diff-file": (_diff_file, _OUTPUT, range(1, 3), False),
    "put-file": (_put_file, {"-r": "recursive", "--recursive": "recursive", "-a": "append", "--append": "append",
                             "-m": "message=", "--message": "message=", "--no-wait": "no_wait",
                             "-x": "executor=", "--executor": "executor="}, range(2, 1 << 30), True),
}


class _errors_reported:
    """User errors as one sentence and an exit code, as cli/main.py's `run` does."""

    def __enter__(self):
        # Importing logging costs ~15 ms, and most of these commands never log.
        when_imported("logging", lambda logging: logging.basicConfig(format="note: %(message)s", level=logging.WARNING))

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
