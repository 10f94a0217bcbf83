"""Commands that check the store, rewrite history and reclaim space: fsck, delete-commit, squash-commit, gc."""

from __future__ import annotations

import sys
from typing import List

import typer

from . import render
from .render import Output, size

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")


def _store():
    from .main import store  # one place opens the store (and decides which)

    return store()


def _say(line: str) -> None:
    """A line of a report: on stdout, where `dpl fsck > report.txt` keeps it."""
    sys.stdout.write(line + "\n")


def register(app: typer.Typer) -> None:
    @app.command("fsck")
    def fsck(
        repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed, and say what cannot."),
        sources: List[str] = typer.Option([], "--from", help="With --repair: a directory holding original files to re-derive lost chunks from (repeatable)."),
        output: Output = OutputOpt,
    ):
        """Re-hash every chunk and check every file index, commit reference and provenance link."""
        if repair:
            result = _store().repair(sources=sources)
            if output == Output.json:
                render.emit_json(result.to_dict())
            else:
                for line in result.fixed:
                    _say(f"fixed: {line}")
                for line in result.unfixed:
                    _say(f"not fixed: {line}")
                _say("The store is consistent." if result.ok else f"{len(result.unfixed)} problem(s) remain.")
            if not result.ok:
                raise typer.Exit(1)
            return
        report = _store().fsck()
        if output == Output.json:
            render.emit_json(report.to_dict())
        else:
            for p in report.problems:
                _say(f"{p.kind}: {p.message}")
                for a in p.affected:
                    _say(f"    affects {a}")
            for note in report.notes:
                _say(f"note: {note}")
            _say(
                f"Checked {report.commits} commits, {report.indexes} file indexes and {report.chunks} objects: "
                + ("no problems." if report.ok else f"{len(report.problems)} problem(s).")
            )
        if not report.ok:
            raise typer.Exit(1)

    @app.command("delete-commit")
    def delete_commit(
        target: str = typer.Argument(..., metavar="REPO@COMMIT"),
        force: bool = typer.Option(False, "--force", "-f", help="Also delete the downstream commits pipelines made from it."),
        output: Output = OutputOpt,
    ):
        """Delete a commit without children (a branch's newest, or an open one); its branches fall back to its parent."""
        s = _store()
        ref = s.require_ref(target)
        result = s.delete_commit(ref.repo, ref.ref, force=force)
        render.emit_json(result) if output == Output.json else render.removed(result)

    @app.command("squash-commit")
    def squash_commit(
        target: str = typer.Argument(..., metavar="REPO@COMMIT"),
        force: bool = typer.Option(False, "--force", "-f", help="Move provenance that names it to its child."),
        output: Output = OutputOpt,
    ):
        """Merge a commit into its child: the commit goes, every file of every other commit stays."""
        s = _store()
        ref = s.require_ref(target)
        result = s.squash_commit(ref.repo, ref.ref, force=force)
        if output == Output.json:
            render.emit_json(result)
        else:
            render.info(f"squashed {result['squashed']} into {', '.join(result['into'])}")

    @app.command("gc")
    def gc(
        grace: float = typer.Option(10.0, "--grace", help="Never delete objects written or reused in the last N minutes."),
        dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only say what would be freed."),
        output: Output = OutputOpt,
    ):
        """Delete the chunks and file indexes no commit, job or datum refers to."""
        report = _store().gc(grace_minutes=grace, dry_run=dry_run)
        if output == Output.json:
            render.emit_json(report.to_dict())
            return
        verb = "would free" if dry_run else "freed"
        render.info(
            f"{verb} {report.objects} object(s), {size(report.bytes)}; kept {report.live} in use"
            + (f" and {report.young} newer than the grace period" if report.young else "")
        )
        if report.temp_files or report.scratch_dirs:
            render.info(f"{'would remove' if dry_run else 'removed'} {report.temp_files} temporary file(s) ({size(report.temp_bytes)}) "
                        f"and {report.scratch_dirs} job scratch directorie(s) left by killed processes")
        for note in report.notes:
            render.info(f"note: {note}")
