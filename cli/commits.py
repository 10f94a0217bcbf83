"""Commands for commits and branches: start-commit, finish-commit, list-commit,
inspect-commit, create-branch, inspect-branch, subscribe-commit, list-branch, delete-branch,
and the transactions that land several commits and pipeline changes at once."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import render
from .render import Output, ago, short, size
from ..storage.errors import DplError, RepoNotFound

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")

COMMIT_COLUMNS = [
    ("repo", "REPO", None),
    ("branch", "BRANCH", None),
    ("id", "COMMIT", short),
    ("state", "STATE", None),
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
    ("verification", "Verified", lambda v: _verdict(v)),  # output commits `dpl verify` re-ran
]


def _verdict(verified: dict | None) -> str:
    if verified is None:
        return "-"
    from ..engine.verify import summary

    return summary(verified)


def _store():
    from .main import store  # one place opens the store (and decides which)

    return store()


def _ref(text: str):
    from ..engine import refs

    return refs.parse(text)


def _maybe_global_id(s, text: str):
    """REPO[@REF] unless `text` is a bare id that names no repo."""
    if "@" not in text and len(text) >= 4 and all(c in "0123456789abcdef" for c in text):
        try:
            s.inspect_repo(text)
        except RepoNotFound:
            return None
    return _ref(text)


def _trigger_text(t) -> str:
    if not t:
        return "-"
    conds = [f"{k}={t[k]}" for k in ("size", "commits", "cron") if t.get(k)]
    return f"from {t['source']} when {(' and ' if t.get('all') else ' or ').join(conds)}"


def register(app: typer.Typer) -> None:
    @app.command("start-commit")
    def start_commit(target: str = typer.Argument(..., metavar="REPO@BRANCH"), message: str = typer.Option("", "--message", "-m")):
        """Open a commit: put-files to the branch join it until finish-commit."""
        ref = _ref(target)
        commit = _store().start_commit(ref.repo, ref.ref_or_default, message)
        sys.stdout.write(commit.id + "\n")

    @app.command("finish-commit")
    def finish_commit(
        target: str = typer.Argument(..., metavar="REPO@BRANCH|REPO@COMMIT"),
        message: Optional[str] = typer.Option(None, "--message", "-m"),
        no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs the commit starts."),
    ):
        """Finish an open commit: it becomes the branch head, atomically (then run the jobs it starts)."""
        ref = _ref(target)
        s = _store()
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
        s = _store()
        ref = _maybe_global_id(s, target)
        if ref is None:
            commits = s.commits_with_id(target)
        else:
            commits = s.list_commits(ref.repo, ref.ref, limit=number)
        render.table([c.to_dict() for c in commits], COMMIT_COLUMNS, output)

    @app.command("inspect-commit")
    def inspect_commit(target: str = typer.Argument(..., metavar="REPO@REF|ID"), output: Output = OutputOpt):
        """Show a commit (or every commit sharing a global id)."""
        s = _store()
        ref = _maybe_global_id(s, target)
        if ref is None:
            render.table([c.to_dict() for c in s.commits_with_id(target)], COMMIT_COLUMNS, output)
            return
        commit = s.inspect_commit(ref.repo, ref.ref_or_default)
        data = commit.to_dict()
        if commit.job and commit.state == "finished":
            data["provenance"] = s.commit_provenance(ref.repo, commit.id)
            data["origin_commits"] = s.origin_commits(ref.repo, commit.id)
            if "verification" in data["provenance"]:  # what `dpl verify` last found
                data["verification"] = data["provenance"]["verification"]
        if output == Output.json:
            render.emit_json(data)
            return
        render.record(data, output, COMMIT_FIELDS)
        if "provenance" in data:
            from .provenance import print_commit_provenance

            print_commit_provenance(data["provenance"])

    @app.command("create-branch")
    def create_branch(
        target: str = typer.Argument(..., metavar="REPO@BRANCH"),
        head: Optional[str] = typer.Option(None, "--head", help="Commit or branch to point at."),
        trigger: Optional[str] = typer.Option(None, "--trigger", "-t", help="A branch of the same repo to follow when the conditions below hold."),
        trigger_size: Optional[str] = typer.Option(None, "--trigger-size", help="Move when the source head is this much bigger (e.g. 100M)."),
        trigger_commits: Optional[int] = typer.Option(None, "--trigger-commits", help="Move when this many commits have landed on the source."),
        trigger_cron: Optional[str] = typer.Option(None, "--trigger-cron", help="Move when this schedule has ticked since the branch last moved (e.g. '@every 1h')."),
        trigger_all: bool = typer.Option(False, "--trigger-all", help="Every condition must hold (default: any)."),
    ):
        """Create (or move) a branch; with --trigger, one that follows another branch when a condition holds."""
        ref = _ref(target)
        s = _store()
        if trigger is None:
            if trigger_size or trigger_commits or trigger_cron or trigger_all:
                raise DplError("--trigger-size, --trigger-commits, --trigger-cron and --trigger-all need --trigger BRANCH.",
                               hint=f"e.g. dpl create-branch {target} --trigger staging --trigger-commits 10")
            s.create_branch(ref.repo, ref.ref_or_default, head)
            return
        if head:
            s.create_branch(ref.repo, ref.ref_or_default, head)
        s.set_trigger(ref.repo, ref.ref_or_default, trigger, size=render.parse_size(trigger_size) if trigger_size else None,
                      commits=trigger_commits, cron=trigger_cron, all_of=trigger_all)

    @app.command("inspect-branch")
    def inspect_branch(target: str = typer.Argument(..., metavar="REPO@BRANCH"), output: Output = OutputOpt):
        """Show a branch: its head, when it moved, its open commit, the pipelines reading it and its trigger."""
        ref = _ref(target)
        info = _store().inspect_branch(ref.repo, ref.ref_or_default)
        render.record(info, output, [("repo", "Repo", None), ("branch", "Branch", None), ("head", "Head", lambda h: h or "-"),
                                     ("created", "Created", ago), ("updated", "Updated", ago), ("open_commit", "Open commit", lambda c: c or "-"),
                                     ("readers", "Read by", lambda r: ", ".join(r) or "-"), ("trigger", "Trigger", _trigger_text)])

    @app.command("subscribe-commit")
    def subscribe_commit(
        target: str = typer.Argument(..., metavar="REPO@BRANCH"),
        new: bool = typer.Option(False, "--new", help="Only commits that land from now on (default: the branch's history first)."),
        output: Output = OutputOpt,
    ):
        """Print each commit as it lands on a branch, until Ctrl-C (-o json: one JSON object a line)."""
        import json

        ref = _ref(target)
        s = _store()
        try:
            for commit in s.subscribe_commits(ref.repo, ref.ref_or_default, new=new):
                d = commit.to_dict()
                if output == Output.json:
                    sys.stdout.write(json.dumps(render._jsonable(d)) + "\n")
                else:
                    sys.stdout.write(f"{d['repo']}@{d['id']}  {d['branch'] or '-'}  {size(d['size'])}  {d['files']} files  {d['description']}\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return  # Ctrl-C is how a subscription ends: not a failure

    @app.command("start-transaction")
    def start_transaction():
        """Open a transaction: the writes and pipeline changes that follow (in any dpl call) land together at finish-transaction."""
        sys.stdout.write(_store().start_transaction() + "\n")

    @app.command("finish-transaction")
    def finish_transaction(
        txn: Optional[str] = typer.Argument(None, metavar="[ID]", help="Default: the open one."),
        no_wait: bool = typer.Option(False, "--no-wait", help="Don't run the pipeline jobs it starts."),
        output: Output = OutputOpt,
    ):
        """Land every commit and pipeline change of the transaction at once, or none of them (then run the jobs they start)."""
        s = _store()
        result = s.finish_transaction(txn)
        if output == Output.json:
            render.emit_json(result)
        else:
            render.info(f"finished transaction {result['id']}: {render.count(result['commits'], 'commit')}, "
                        f"{render.count(result['pipelines'], 'pipeline change')}")
        if not no_wait and (result["commits"] or result["pipelines"]):
            from .pipelines import run_and_report

            run_and_report(s, result["id"], None)

    @app.command("delete-transaction")
    def delete_transaction(txn: Optional[str] = typer.Argument(None, metavar="[ID]", help="Default: the open one.")):
        """Abandon a transaction: its open commits and queued pipeline changes are dropped."""
        result = _store().delete_transaction(txn)
        render.info(f"deleted transaction {result['id']}" + (f" (dropped open commits on {', '.join(result['dropped'])})" if result["dropped"] else ""))

    @app.command("inspect-transaction")
    def inspect_transaction(txn: Optional[str] = typer.Argument(None, metavar="[ID]", help="Default: the open one."), output: Output = OutputOpt):
        """Show a transaction: its state, the branches it writes to and its queued pipeline changes."""
        info = _store().inspect_transaction(txn)
        render.record(info, output, [("id", "Transaction", None), ("state", "State", None), ("created", "Started", ago),
                                     ("commits", "Commits", lambda c: ", ".join(c) or "-"),
                                     ("ops", "Pipeline changes", lambda o: ", ".join(f"{x['kind']} {x['pipeline']}" for x in o) or "-")])

    @app.command("list-branch")
    def list_branch(repo: str, output: Output = OutputOpt):
        """List a repo's branches."""
        render.table(_store().list_branches(repo), [("branch", "BRANCH", None), ("head", "HEAD", short), ("updated", "UPDATED", ago)], output)

    @app.command("delete-branch")
    def delete_branch(
        target: str = typer.Argument(..., metavar="REPO@BRANCH"),
        force: bool = typer.Option(False, "--force", "-f", help="Delete even if pipelines read or write it, or it has an open commit."),
    ):
        """Delete a branch (its commits stay readable by id)."""
        ref = _ref(target)
        _store().delete_branch(ref.repo, ref.ref_or_default, force=force)
