"""The `dpl` command: typer commands over the engine, in pachctl's style.

Each command parses its arguments, makes one engine call and renders the
result.  Errors are typed `DplError`s raised by the engine and turned into one
sentence plus a hint on stderr, here and nowhere else.

It holds the commands of the store, repos and files, each a short
parse-call-render; commits and branches, pipelines, provenance, secrets
and maintenance have modules of their own, which cli/commands.py imports
only when one of their commands runs.
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

from . import commands, render
from . import version as _version
from .render import Output, ago, size
from ..storage.errors import DplError

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
def delete_repo(
    name: str,
    force: bool = typer.Option(False, "--force", "-f", help="Delete even if pipelines read it: those pipelines (and theirs) go too, with their output repos and the commits made from it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --force, delete without asking (needed when stdin is not a terminal)."),
):
    """Delete a repo and all its commits (with --force, what was derived from it too, listed first)."""
    s = store()
    if force:
        # What --force takes is listed before anything goes, and confirmed.
        _say_repo_deletion(s.history.delete_repo(name, force=True, dry_run=True))
        if not yes:
            if not sys.stdin.isatty():
                raise DplError("delete-repo --force needs --yes when stdin is not a terminal; nothing was deleted.",
                               hint=f"Read the list above, then run `dpl delete-repo {name} --force --yes`.")
            if not typer.confirm("Delete all of this?", default=False, err=True):
                raise DplError("Nothing was deleted.")
    result = s.delete_repo(name, force=force)
    render.info(f"deleted {render.count(result['repos'], 'repo')} ({', '.join(result['repos'])})"
                + (f", {render.count(result['pipelines'], 'pipeline')} ({', '.join(result['pipelines'])})" if result["pipelines"] else "")
                + f" and {render.count(result['deleted'], 'commit')}")


def _say_repo_deletion(plan: dict) -> None:
    """What `delete-repo --force` is about to delete, on stderr (messages for people)."""
    gone = set(plan["repos"])
    per_repo: dict[str, int] = {}
    derived = []
    for item in plan["deleted"]:
        repo, _, cid = item.partition("@")
        per_repo[repo] = per_repo.get(repo, 0) + 1
        if repo not in gone:
            derived.append(f"{repo}@{cid[:12]}")
    render.info("This deletes:")
    if plan["pipelines"]:
        render.info(f"  pipelines: {', '.join(plan['pipelines'])}")
    render.info("  repos:     " + ", ".join(f"{r} ({render.count(range(per_repo.get(r, 0)), 'commit')})" for r in plan["repos"]))
    if derived:
        render.info(f"  commits made from it in other repos: {', '.join(derived)}")
    if plan["jobs"]:
        render.info(f"  jobs:      {len(plan['jobs'])}")


# --------------------------------------------------------------------- files


@app.command("put-file")
def put_file(
    target: str = typer.Argument(..., metavar="REPO@BRANCH[:PATH]"),
    sources: Optional[List[str]] = typer.Argument(None, metavar="SOURCE...", help="Files, directories (with -r), http(s):// URLs, or - for stdin."),
    file: Optional[List[str]] = typer.Option(None, "--file", "-f", help="A source, as pachctl spells it: a file, a directory (with -r), an http(s):// URL or - (repeatable)."),
    input_file: Optional[str] = typer.Option(None, "--input-file", "-i", help="A text file naming sources (files, directories, URLs), one a line."),
    untar: bool = typer.Option(False, "--untar", help="Each source is a tar archive (.tar, .tar.gz, ...): put what it holds."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Put directories recursively."),
    append: bool = typer.Option(False, "--append", "-a", help="Append to existing files instead of replacing them."),
    message: str = typer.Option("", "--message", "-m", help="The commit description."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts; `dpl run` picks them up."),
    executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run those jobs' datums on this executor (local, docker, ray)."),
):
    """Put files into a branch as one atomic commit (then run the jobs it starts)."""
    from ..engine.fetching import read_source_list, staged_sources

    ref = _repo_branch(target)
    dest = ref.path
    if dest not in (None, "/") and target.endswith("/"):
        dest += "/"  # a directory to put into, as `cp f dir/` (parsing dropped the slash)
    every = list(sources or []) + list(file or []) + (read_source_list(input_file) if input_file else [])
    s = store()
    with staged_sources(dest, every, recursive=recursive, untar=untar) as plans, render.ProgressLine("putting files") as progress:
        commit = s.put_files(ref.repo, ref.ref_or_default, plans, append=append, description=message, progress=progress)
    state = "added to open commit" if commit.state == "open" else "committed"
    render.info(f"{state} {ref.repo}@{commit.id} ({commit.nfiles} files, {size(commit.size)})")
    if commit.state == "finished" and not no_wait:
        from .pipelines import run_and_report

        run_and_report(s, commit.id, executor)


@app.command("copy-file")
def copy_file(
    source: str = typer.Argument(..., metavar="SRC_REPO@REF:PATH"),
    target: str = typer.Argument(..., metavar="DST_REPO@BRANCH[:PATH]"),
    message: str = typer.Option("", "--message", "-m", help="The commit description."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts."),
):
    """Copy a file or directory into a branch by reference: no byte is read or stored again."""
    src = _repo_branch(source, default_path="/")
    dst = _repo_branch(target)
    dest = dst.path + "/" if dst.path not in (None, "/") and target.endswith("/") else dst.path
    s = store()
    commit = s.copy_file(src.repo, src.ref_or_default, src.path, dst.repo, dst.ref_or_default, dest, message)
    state = "copied into open commit" if commit.state == "open" else "committed"
    render.info(f"{state} {dst.repo}@{commit.id} ({commit.nfiles} files, {size(commit.size)})")
    if commit.state == "finished" and not no_wait:
        from .pipelines import run_and_report

        run_and_report(s, commit.id, None)


@app.command("inspect-file")
def inspect_file(target: str = typer.Argument(..., metavar="REPO@REF:PATH"), output: Output = OutputOpt):
    """Show one file (or directory) of a commit: type, size, hash, and the commit it was read from."""
    ref = _repo_branch(target, default_path="/")
    info = store().inspect_file(ref.repo, ref.ref_or_default, ref.path)
    render.record(info, output, [("path", "Path", None), ("type", "Type", None), ("size", "Size", size), ("hash", "Hash", lambda h: h or "-"),
                                 ("chunks", "Chunk refs", None), ("files", "Files", None), ("repo", "Repo", None),
                                 ("commit", "Commit", None), ("branch", "Branch", None), ("committed", "Committed", ago)])


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
    new: str = typer.Argument(..., metavar="REPO@REF[:PATH]"),
    old: Optional[str] = typer.Argument(None, metavar="[REPO@OTHER[:PATH]]", help="Compare against this (default: the parent commit)."),
    output: Output = OutputOpt,
):
    """Show files added, modified and deleted between two commits (under PATH, if given)."""
    from ..engine.files import within

    a = _repo_branch(new)
    b = _repo_branch(old) if old else None
    diff = store().diff_files(a.repo, a.ref_or_default, b.repo if b else None, b.ref_or_default if b else None)
    diff = within(diff, a.path or (b.path if b else None))
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
        commands.app_for(app, sys.argv[1:])()
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


if __name__ == "__main__":
    run()
