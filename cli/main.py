"""The `dpl` command: typer commands over the engine, in pachctl's style.

Each command parses its arguments, makes one engine call and renders the
result.  Errors are typed `DplError`s raised by the engine and turned into one
sentence plus a hint on stderr, here and nowhere else.

(Over 400 lines: it holds the 22 commands of repos, files, commits,
branches and secrets, each a short parse-call-render; pipelines, provenance
and maintenance have modules of their own, imported only when used.)
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

# dpl does no linear algebra, but importing numpy (pyarrow does) starts
# OpenBLAS's thread pool: one thread per core, spinning up on every CLI call.
# Steps never inherit this (their environment is built from scratch).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer  # noqa: E402

from . import render
from . import version as _version
from .render import Output, ago, short, size
from ..storage.errors import DplError, RepoNotFound

app = typer.Typer(
    name="dpl",
    help="dpl: data-versioned pipelines. Content-addressed data repos, Pachyderm-compatible pipelines, full provenance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")


def _print_version(asked: bool) -> None:
    if asked:
        sys.stdout.write(f"dpl {_version()}\n")
        raise typer.Exit()


_address: Optional[str] = None  # --address, for `store()`


@app.callback()
def _global_options(
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print dpl's version and exit."),
    address: Optional[str] = typer.Option(None, "--address", metavar="URL", help="Act on the dpl server at URL (else DPL_ADDRESS, else `dpl connect`'s; 'local' for the store here)."),
):
    """dpl: data-versioned pipelines. Content-addressed data repos, Pachyderm-compatible pipelines, full provenance."""
    global _address
    _address = address


def store():
    """The store commands act on: a server's (--address, DPL_ADDRESS, `dpl connect`) or the embedded one here."""
    from ..client.config import address

    url = address(_address)
    if url is not None:
        from ..client import connect

        return connect(url)
    from ..engine import Store

    return Store.open()


def _repo_branch(text: str, default_path: str | None = None):
    from ..engine import refs

    return refs.parse(text, default_path=default_path)


COMMIT_COLUMNS = [
    ("repo", "REPO", None),
    ("branch", "BRANCH", None),
    ("id", "COMMIT", short),
    ("finished", "FINISHED", ago),
    ("size", "SIZE", size),
    ("files", "FILES", None),
    ("origin", "ORIGIN", None),
    ("description", "DESCRIPTION", None),
]
COMMIT_FIELDS = [
    ("repo", "Repo", None),
    ("id", "Commit", None),
    ("branch", "Branch", None),
    ("parent", "Parent", None),
    ("state", "State", None),
    ("origin", "Origin", None),
    ("created", "Started", ago),
    ("finished", "Finished", ago),
    ("size", "Size", size),
    ("files", "Files", None),
    ("description", "Description", None),
    ("job", "Job", None),
]


# --------------------------------------------------------------------- store


@app.command()
def init(
    path: Optional[str] = typer.Argument(None, help="Where to create the store (default: DPL_STORE or ./.dpl)."),
    no_fsync: bool = typer.Option(False, "--no-fsync", help="Skip flushing to disk before each commit (faster; safe against process crashes, not power loss)."),
    object_store: Optional[str] = typer.Option(None, "--object-store", help="Keep chunks and file indexes in s3://BUCKET/PREFIX (endpoint and credentials: the standard AWS_* variables and config files)."),
    cache_size: Optional[str] = typer.Option(None, "--cache-size", help="Bound of the local read cache of an object store, e.g. 2G (the default) or 500M."),
    executor: str = typer.Option("local", "--executor", "-x", help="Where datums run by default: local, docker or ray (a spec's dpl.executor or a command's --executor overrides it)."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="Keep metadata in PostgreSQL at postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, shared by every machine whose store names it (default: SQLite in the store)."),
):
    """Create a dpl store (default .dpl/ in the current directory)."""
    from ..engine import init_store

    cache_bytes = render.parse_size(cache_size) if cache_size else None
    root = init_store(path, durable=not no_fsync, object_store=object_store, cache_bytes=cache_bytes, executor=executor, metadata=metadata)
    render.info(f"Initialised an empty dpl store in {root}")


@app.command()
def fsck(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed, and say what cannot."),
    sources: List[str] = typer.Option([], "--from", help="With --repair: a directory holding original files to re-derive lost chunks from (repeatable)."),
    output: Output = OutputOpt,
):
    """Re-hash every chunk and check every file index, commit reference and provenance link."""
    if repair:
        result = store().repair(sources=sources)
        if output == Output.json:
            render.emit_json(result.to_dict())
        else:
            for line in result.fixed:
                render.info(f"fixed: {line}")
            for line in result.unfixed:
                render.info(f"not fixed: {line}")
            render.info("The store is consistent." if result.ok else f"{len(result.unfixed)} problem(s) remain.")
        if not result.ok:
            raise typer.Exit(1)
        return
    report = store().fsck()
    if output == Output.json:
        render.emit_json(report.to_dict())
    else:
        for p in report.problems:
            render.info(f"{p.kind}: {p.message}")
            for a in p.affected:
                render.info(f"    affects {a}")
        for note in report.notes:
            render.info(f"note: {note}")
        render.info(
            f"Checked {report.commits} commits, {report.indexes} file indexes and {report.chunks} objects: "
            + ("no problems." if report.ok else f"{len(report.problems)} problem(s).")
        )
    if not report.ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------- repos


@app.command("create-repo")
def create_repo(name: str, description: str = typer.Option("", "--description", "-d")):
    """Create a data repo."""
    store().create_repo(name, description)


@app.command("list-repo")
def list_repo(output: Output = OutputOpt):
    """List repos with their size, number of commits and last commit time."""
    render.table(
        store().list_repos(),
        [("name", "NAME", None), ("size", "SIZE (MASTER)", size), ("files", "FILES", None), ("commits", "COMMITS", None),
         ("last_commit", "LAST COMMIT", ago), ("description", "DESCRIPTION", None)],
        output,
    )


@app.command("inspect-repo")
def inspect_repo(name: str, output: Output = OutputOpt):
    """Show one repo."""
    data = store().inspect_repo(name)
    render.record(data, output, [("name", "Name", None), ("kind", "Kind", None), ("description", "Description", None),
                                 ("created", "Created", ago), ("size", "Size (master)", size), ("files", "Files", None),
                                 ("commits", "Commits", None), ("last_commit", "Last commit", ago),
                                 ("branches", "Branches", lambda b: ", ".join(b) or "-")])


@app.command("delete-repo")
def delete_repo(name: str, force: bool = typer.Option(False, "--force", "-f", help="Delete even if pipelines read it, with the commits they made from it.")):
    """Delete a repo and all its commits."""
    store().delete_repo(name, force=force)


# --------------------------------------------------------------------- files


@app.command("put-file")
def put_file(
    target: str = typer.Argument(..., metavar="REPO@BRANCH[:PATH]"),
    sources: List[str] = typer.Argument(..., metavar="SOURCE...", help="Files, directories (with -r), or - for stdin."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Put directories recursively."),
    append: bool = typer.Option(False, "--append", "-a", help="Append to existing files instead of replacing them."),
    message: str = typer.Option("", "--message", "-m", help="The commit description."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts; `dpl run` picks them up."),
    executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run those jobs' datums on this executor (local, docker, ray)."),
):
    """Put files into a branch as one atomic commit (then run the jobs it starts)."""
    from ..engine.files import plan_sources

    ref = _repo_branch(target)
    s = store()
    plans = plan_sources(ref.path, sources, recursive=recursive)
    with _progress("putting files") as progress:
        commit = s.put_files(ref.repo, ref.ref_or_default, plans, append=append, description=message, progress=progress)
    state = "added to open commit" if commit.state == "open" else "committed"
    render.info(f"{state} {ref.repo}@{commit.id} ({commit.nfiles} files, {size(commit.size)})")
    if commit.state == "finished" and not no_wait:
        from .pipelines import run_and_report

        run_and_report(s, commit.id, executor)


class _progress:
    """A rich progress line on stderr, only for people watching a terminal."""

    def __init__(self, what: str):
        self.what = what
        self.live = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=True)
        self.live.start()
        task = self.live.add_task(self.what)

        def update(files: int, nbytes: int):
            self.live.update(task, description=f"{self.what}: {files} files, {size(nbytes)}")

        return update

    def __exit__(self, *exc):
        if self.live:
            self.live.stop()


@app.command("get-file")
def get_file(
    source: str = typer.Argument(..., metavar="REPO@REF:PATH"),
    dest: Optional[str] = typer.Option(None, "--output", "-o", help="Write to this file or directory instead of stdout."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Get a directory."),
):
    """Write a file's bytes to stdout (or -o DEST); directories with -r."""
    ref = _repo_branch(source, default_path="/")
    s = store()
    if recursive:
        if not dest:
            raise DplError("Getting a directory needs a destination.", hint="Pass -o DIR.")
        n = s.export_dir(ref.repo, ref.ref_or_default, ref.path, dest)
        render.info(f"wrote {n} files to {dest}")
        return
    row = s.file_row(ref.repo, ref.ref_or_default, ref.path)
    if dest:
        s.export_file(row, dest)
    else:
        sys.stdout.flush()
        s.write_file_to(row, sys.stdout.fileno())


FILE_COLUMNS = [("path", "NAME", None), ("type", "TYPE", None), ("size", "SIZE", size), ("hash", "HASH", None)]


@app.command("list-file")
def list_file(
    target: str = typer.Argument(..., metavar="REPO@REF[:PATH]"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="List every file beneath, not just the direct children."),
    output: Output = OutputOpt,
):
    """List the files and directories under a path of a commit."""
    ref = _repo_branch(target, default_path="/")
    entries = store().list_files(ref.repo, ref.ref_or_default, ref.path, recursive=recursive)
    render.table(entries, FILE_COLUMNS, output)


@app.command("glob-file")
def glob_file(target: str = typer.Argument(..., metavar="REPO@REF:PATTERN"), output: Output = OutputOpt):
    """List the files and directories matching a glob pattern."""
    repo_ref, _, pattern = target.partition(":")
    ref = _repo_branch(repo_ref)
    entries = store().glob_files(ref.repo, ref.ref_or_default, pattern or "/*")
    render.table(entries, FILE_COLUMNS, output)


@app.command("diff-file")
def diff_file(
    new: str = typer.Argument(..., metavar="REPO@REF"),
    old: Optional[str] = typer.Argument(None, metavar="[REPO@OTHER]", help="Compare against this (default: the parent commit)."),
    output: Output = OutputOpt,
):
    """Show files added, modified and deleted between two commits."""
    a = _repo_branch(new)
    b = _repo_branch(old) if old else None
    diff = store().diff_files(a.repo, a.ref_or_default, b.repo if b else None, b.ref_or_default if b else None)
    render.table(
        diff,
        [("change", "CHANGE", None), ("path", "PATH", None), ("old_size", "OLD SIZE", size), ("new_size", "NEW SIZE", size)],
        output,
    )


@app.command("delete-file")
def delete_file(
    target: str = typer.Argument(..., metavar="REPO@BRANCH:PATH"),
    message: str = typer.Option("", "--message", "-m"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts."),
):
    """Delete a file or directory in a new commit."""
    ref = _repo_branch(target)
    if ref.path is None:
        raise DplError("delete-file needs a path.", hint="Write REPO@BRANCH:/path.")
    s = store()
    commit = s.delete_files(ref.repo, ref.ref_or_default, [ref.path], message)
    render.info(f"{'deleted in open commit' if commit.state == 'open' else 'committed'} {ref.repo}@{commit.id}")
    if commit.state == "finished" and not no_wait:
        from .pipelines import run_and_report

        run_and_report(s, commit.id, None)


# --------------------------------------------------------- commits, branches


@app.command("start-commit")
def start_commit(target: str = typer.Argument(..., metavar="REPO@BRANCH"), message: str = typer.Option("", "--message", "-m")):
    """Open a commit: put-files to the branch join it until finish-commit."""
    ref = _repo_branch(target)
    commit = store().start_commit(ref.repo, ref.ref_or_default, message)
    sys.stdout.write(commit.id + "\n")


@app.command("finish-commit")
def finish_commit(
    target: str = typer.Argument(..., metavar="REPO@BRANCH|REPO@COMMIT"),
    message: Optional[str] = typer.Option(None, "--message", "-m"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts."),
):
    """Finish an open commit: it becomes the branch head, atomically (then run the jobs it starts)."""
    ref = _repo_branch(target)
    s = store()
    commit = s.finish_commit(ref.repo, ref.ref_or_default, message)
    render.info(f"finished {ref.repo}@{commit.id} ({commit.nfiles} files, {size(commit.size)})")
    if not no_wait:
        from .pipelines import run_and_report

        run_and_report(s, commit.id, None)


@app.command("list-commit")
def list_commit(
    target: str = typer.Argument(..., metavar="REPO[@BRANCH]|ID"),
    number: Optional[int] = typer.Option(None, "--number", "-n", help="Show at most this many."),
    output: Output = OutputOpt,
):
    """List commits, newest first: a repo's, a branch's history, or every commit sharing a global id."""
    s = store()
    ref = _maybe_global_id(s, target)
    if ref is None:
        commits = s.commits_with_id(target)
    else:
        commits = s.list_commits(ref.repo, ref.ref, limit=number)
    render.table([c.to_dict() for c in commits], COMMIT_COLUMNS, output)


def _maybe_global_id(s, text: str):
    """REPO[@REF] unless `text` is a bare id that names no repo."""
    if "@" not in text and len(text) >= 4 and all(c in "0123456789abcdef" for c in text):
        try:
            s.inspect_repo(text)
        except RepoNotFound:
            return None
    return _repo_branch(text)


@app.command("inspect-commit")
def inspect_commit(target: str = typer.Argument(..., metavar="REPO@REF|ID"), output: Output = OutputOpt):
    """Show a commit (or every commit sharing a global id)."""
    s = store()
    ref = _maybe_global_id(s, target)
    if ref is None:
        render.table([c.to_dict() for c in s.commits_with_id(target)], COMMIT_COLUMNS, output)
        return
    commit = s.inspect_commit(ref.repo, ref.ref_or_default)
    data = commit.to_dict()
    if commit.job and commit.state == "finished":
        data["provenance"] = s.commit_provenance(ref.repo, commit.id)
        data["origin_commits"] = s.origin_commits(ref.repo, commit.id)
    if output == Output.json:
        render.emit_json(data)
        return
    render.record(data, output, COMMIT_FIELDS)
    if "provenance" in data:
        from .provenance import print_commit_provenance

        print_commit_provenance(data["provenance"])


@app.command("create-branch")
def create_branch(target: str = typer.Argument(..., metavar="REPO@BRANCH"), head: Optional[str] = typer.Option(None, "--head", help="Commit or branch to point at.")):
    """Create (or move) a branch."""
    ref = _repo_branch(target)
    store().create_branch(ref.repo, ref.ref_or_default, head)


@app.command("list-branch")
def list_branch(repo: str, output: Output = OutputOpt):
    """List a repo's branches."""
    render.table(store().list_branches(repo), [("branch", "BRANCH", None), ("head", "HEAD", short), ("updated", "UPDATED", ago)], output)


@app.command("delete-branch")
def delete_branch(
    target: str = typer.Argument(..., metavar="REPO@BRANCH"),
    force: bool = typer.Option(False, "--force", "-f", help="Delete even if pipelines read or write it, or it has an open commit."),
):
    """Delete a branch (its commits stay readable by id)."""
    ref = _repo_branch(target)
    store().delete_branch(ref.repo, ref.ref_or_default, force=force)


# ------------------------------- history and gc, pipelines and jobs, provenance

# The commands of the other command modules, which `_app_for` imports only
# when one of theirs runs (or for help); test_bench checks this table
# against what each module registers.
MODULE_COMMANDS = {
    "maintenance": ("delete-commit", "squash-commit", "gc"),
    "pipelines": ("create-pipeline", "update-pipeline", "list-pipeline", "inspect-pipeline", "delete-pipeline",
                  "stop-pipeline", "start-pipeline", "list-job", "inspect-job", "list-datum", "inspect-datum", "logs",
                  "run", "run-cron", "wait-commit"),
    "provenance": ("provenance", "subvenance", "why", "draw-dag"),
    "serve": ("serve", "connect", "disconnect"),
}
_registered: set[str] = set()


def _register(*modules: str) -> None:
    for name in modules:
        if name not in _registered:
            _command_module(name).register(app)
            _registered.add(name)


def _command_module(name: str):
    # Spelled out, not imported by name, so that static tools see the arrows.
    if name == "maintenance":
        from . import maintenance

        return maintenance
    if name == "pipelines":
        from . import pipelines

        return pipelines
    if name == "serve":
        from . import serve

        return serve
    from . import provenance

    return provenance


# ------------------------------------------------------------------- secrets


def _secret_pairs(pairs: List[str], option: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DplError(f"{option} {pair!r} is not KEY=VALUE.", hint=f"Write {option} key=value.")
        out.append((key, value))
    return out


@app.command("create-secret")
def create_secret(
    name: str,
    from_literal: List[str] = typer.Option([], "--from-literal", help="A key and its value, KEY=VALUE (repeatable)."),
    from_file: List[str] = typer.Option([], "--from-file", help="A key and a file holding its value, KEY=PATH (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a secret of that name."),
):
    """Store a secret that pipeline specs can name in transform.secrets (values never appear in specs or logs)."""
    data = dict(_secret_pairs(from_literal, "--from-literal"))
    for key, path in _secret_pairs(from_file, "--from-file"):
        try:
            data[key] = open(path, encoding="utf-8").read()
        except OSError as e:
            raise DplError(f"Cannot read {path} for key {key!r}: {e.strerror}.") from None
        except UnicodeDecodeError:
            raise DplError(f"{path} (key {key!r}) is not UTF-8 text; secrets hold text.") from None
    info = store().create_secret(name, data, overwrite=overwrite)
    render.info(f"created secret {name} ({', '.join(info['keys'])})")


@app.command("list-secret")
def list_secret(output: Output = OutputOpt):
    """List secrets: names and keys, never values."""
    render.table(store().list_secrets(), [("name", "NAME", None), ("keys", "KEYS", ", ".join), ("created", "CREATED", ago)], output)


@app.command("delete-secret")
def delete_secret(name: str):
    """Delete a secret (pipelines that name it fail at their next job until it exists again)."""
    store().delete_secret(name)
    render.info(f"deleted secret {name}")


# ---------------------------------------------------------------------- main


def run() -> None:
    """Console entry point: the one place user errors become exit codes.

    Typer (click) handles its own usage errors with exit code 2; every
    `DplError` the engine raises passes through it and is reported here.
    """
    if sys.argv[1:] == ["--version"]:  # needs nothing of the command line's machinery
        sys.stdout.write(f"dpl {_version()}\n")
        return
    import logging

    logging.basicConfig(format="note: %(message)s", level=logging.WARNING)
    try:
        _app_for(sys.argv[1:])()
    except DplError as e:
        sys.stderr.write(f"error: {e.message}\n")
        if e.hint:
            sys.stderr.write(f"hint: {e.hint}\n")
        sys.exit(e.exit_code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as e:
        import errno

        if e.errno == errno.ENOSPC:
            sys.stderr.write("error: The disk is full; nothing was committed.\nhint: Free some space and run the command again.\n")
        else:
            sys.stderr.write(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "") + "\n")
        sys.exit(1)


def _app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command this call runs, when it names one.

    Typer turns every registered command into a click command on each call
    (~50 of them: about a third of what importing typer costs); one call
    runs one, and imports only the command module that defines it.  `dpl`,
    `dpl --help` and an unknown name get the whole app, so help lists every
    command and a typo gets click's suggestions.
    """
    # The first word that is not an option, nor the value of --address (the one global option that takes one).
    name = next((a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--address")), None)
    _register(*(module for module, names in MODULE_COMMANDS.items() if name in names))
    chosen = [c for c in app.registered_commands if (c.name or c.callback.__name__.lower().replace("_", "-")) == name]
    if len(chosen) != 1:
        _register(*MODULE_COMMANDS)
        return app
    import copy

    one = copy.copy(app)
    one.registered_commands = chosen
    return one


if __name__ == "__main__":
    run()
