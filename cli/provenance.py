"""`dpl` commands for provenance: where a file or commit came from, what was made of it.

Every command prints a tree for people, the same tree as JSON with `-o json`,
or a graph with `--graph dot|mermaid` for those who would rather look.
"""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, Optional

import typer

from . import render
from .render import Output

if TYPE_CHECKING:  # rich's Tree is imported only when a tree is drawn
    from rich.tree import Tree

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table (a tree) for people, json for programs.")


class Graph(str, enum.Enum):
    dot = "dot"
    mermaid = "mermaid"


GraphOpt = typer.Option(None, "--graph", "-g", help="Print a graph instead: dot or mermaid.")


def _store():
    from .main import store  # one place decides which store (or server) commands act on

    return store()


def _file_label(node: dict) -> str:
    if "more_files" in node:
        return f"[dim]... and {node['more_files']} more files of {node['repo']}[/dim]"
    commit = (node.get("commit") or "-")[:12]
    label = f"[bold]{node['repo']}[/bold]@{commit}:{node['path']}"
    if node.get("hash"):
        label += f" [dim]{node['hash'][:12]}[/dim]"
    if node.get("input"):
        label = f"[cyan]{node['input']}[/cyan] {label}"
    datum = node.get("datum")
    if isinstance(datum, dict):
        code = datum.get("code") or {}
        version = f" code {code['head'][:12]}{' (dirty)' if code.get('dirty') else ''}" if code.get("head") else ""
        version += _code_files(code)
        image = (datum.get("executor") or {}).get("image_digest")
        label += f"\n  [green]written by datum {datum['id'][:12]}[/green] of job {datum['pipeline']}@{datum['job'][:12]} (spec {str(datum.get('spec_hash'))[:12]}{version}{', image ' + image[:19] if image else ''})"
        if (verified := node.get("verification")) is not None:
            label += "\n  " + _verdict(verified)
    elif node.get("origin") == "user":
        label += " [yellow](user commit)[/yellow]"
    return label


def _verdict(verified: dict) -> str:
    """What `dpl verify` found for the commit holding a file, and for the datum that wrote it."""
    from ..engine.verify import summary

    line = f"verify: commit {summary(verified['commit'])}"
    datum = verified.get("datum")
    if datum is None:
        return f"[dim]{line}; this datum was not re-run[/dim]"
    if datum["reproducible"]:
        return f"[green]{line}; this datum reproduced its outputs[/green]"
    return f"[red]{line}; this datum did not reproduce its outputs[/red]"


def _code_files(code: dict, prefix: str = "") -> str:
    """` ran train.py 1a2b3c4d5e6f`: the host files a job ran and their hash."""
    files = sorted(code.get("files") or {})
    if not files:
        return ""
    names = ", ".join(files[:3]) + (f" +{len(files) - 3}" if len(files) > 3 else "")
    return f"{prefix} ran {names} {code['hash'][:12]}"


def _tree(node: dict, key: str, label) -> Tree:
    from rich.tree import Tree

    tree = Tree(label(node))

    def add(parent, n):
        for child in n.get(key) or []:
            add(parent.add(label(child)), child)

    add(tree, node)
    return tree


def _print_tree(tree) -> None:
    from rich.console import Console

    # Piped output is not cut to 80 columns: ids and paths must survive grep.
    Console(highlight=False, width=None if sys.stdout.isatty() else 1000).print(tree)


def _split(target: str):
    from ..engine import refs

    ref = refs.parse(target)
    if ref.path is None or ref.path == "/":
        raise render_error("A file path is needed.", "Write REPO@REF:/path/to/file.")
    return ref


def render_error(message: str, hint: str):
    from ..storage.errors import DplError

    return DplError(message, hint=hint)


def register(app: typer.Typer) -> None:
    @app.command("provenance")
    def provenance(target: str = typer.Argument(..., metavar="REPO@REF:PATH"), output: Output = OutputOpt, graph: Optional[Graph] = GraphOpt):
        """Where a file came from: the datum that wrote it and the input files it read, back to user commits."""
        from ..engine import provenance as prov

        ref = _split(target)
        tree = _store().file_provenance(ref.repo, ref.ref_or_default, ref.path)
        if graph:
            sys.stdout.write(prov.to_dot(tree) if graph == Graph.dot else prov.to_mermaid(tree))
        elif output == Output.json:
            render.emit_json(tree)
        else:
            _print_tree(_tree(tree, "inputs", _file_label))

    @app.command("subvenance")
    def subvenance(target: str = typer.Argument(..., metavar="REPO@REF:PATH"), output: Output = OutputOpt, graph: Optional[Graph] = GraphOpt):
        """What was derived from a file version: every downstream file and commit, and which are on a branch head now."""
        from ..engine import provenance as prov

        ref = _split(target)
        tree = _store().file_subvenance(ref.repo, ref.ref_or_default, ref.path)
        if graph:
            sys.stdout.write(prov.to_dot(tree, backward=False) if graph == Graph.dot else prov.to_mermaid(tree, backward=False))
        elif output == Output.json:
            render.emit_json(tree)
        else:
            def label(n):
                text = f"[bold]{n['repo']}[/bold]:{n['path']} [dim]{n['hash'][:12]}[/dim]"
                for c in n.get("commits", []):
                    text += f"\n  in {n['repo']}@{c['commit'][:12]}" + (f" [green](head of {c['head_of']})[/green]" if c["head_of"] else "")
                return text

            _print_tree(_tree(tree, "derived", label))

    @app.command("why")
    def why(job: str = typer.Argument(..., metavar="PIPELINE@JOB"), output: Output = OutputOpt):
        """Why a job's datums ran (new input, changed content, spec changed, retried), and how many were skipped."""
        from .pipelines import job_ref

        pipeline, jid = job_ref(job)
        info = _store().why(pipeline, jid)
        if output == Output.json:
            render.emit_json(info)
            return
        for reason, count in info["reasons"].items():
            sys.stdout.write(f"{count:>8}  {reason}\n")
        sys.stdout.write(f"{info['skipped']:>8}  skipped (unchanged; outputs carried forward)\n")

    @app.command("draw-dag")
    def draw_dag(graph: Graph = typer.Option(Graph.mermaid, "--graph", "-g", help="dot or mermaid.")):
        """Draw the pipeline DAG: repos, pipelines and what reads what."""
        from ..engine import provenance as prov

        g = _store().dag()
        sys.stdout.write(prov.dag_dot(g) if graph == Graph.dot else prov.dag_mermaid(g))


def print_commit_provenance(tree: dict) -> None:
    """The input commits of an output commit, recursively, for inspect-commit."""
    def label(n):
        text = f"[bold]{n['repo']}[/bold]@{(n.get('commit') or '(empty)')}"
        if "job" in n:
            job, version = n["job"], n.get("pipeline_version") or {}
            code = version.get("code") or {}
            text += f"\n  job {job['pipeline']}@{job['id'][:12]} ({job['state']}), spec {version.get('spec_hash', '')[:12]} v{version.get('version')}"
            if code.get("head"):
                text += f", code {code['repo']} {code['head'][:12]}{' (dirty)' if code.get('dirty') else ''}"
            text += _code_files(job.get("code") or {}, prefix=",")
            ex = job.get("executor") or {}
            text += f", executor {ex.get('kind', '?')}" + (f" image {ex['image_digest'][:19]}" if ex.get("image_digest") else "")
        else:
            text += " [yellow](user commit)[/yellow]"
        return text

    sys.stdout.write("Provenance:\n")
    _print_tree(_tree(tree, "inputs", label))
