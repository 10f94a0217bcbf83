"""Waves: the jobs a commit (or a pipeline change) starts: the `Waves` component.

A finished user commit starts a *wave*: one job, sharing the commit's global
id, for every running pipeline downstream of its branch, created in the
commit's own transaction (`commit_landed` is the subscriber `Store` wires to
`Commits.on_landed`).  Creating, updating or starting a pipeline starts a wave
rooted at that pipeline (`start` with `roots`, or `trigger`).  Running the
jobs is `jobs.Jobs`; which job may run first follows the same `Graph`.
"""

from __future__ import annotations

import time
import uuid

from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata.db import Database, Tx


class Graph:
    """Pipelines, what they read and where they write, from the metadata."""

    def __init__(self, tx: Tx):
        self.pipelines = {p.name: p for p in pipeline_rows.all_pipelines(tx)}
        self.inputs: dict[str, set[tuple[str, str]]] = {}
        self.readers: dict[tuple[str, str], set[str]] = {}
        for e in pipeline_rows.all_inputs(tx):
            self.inputs.setdefault(e.pipeline, set()).add((e.repo, e.branch))
            self.readers.setdefault((e.repo, e.branch), set()).add(e.pipeline)

    def output(self, pipeline: str) -> tuple[str, str]:
        return pipeline, self.pipelines[pipeline].output_branch

    def downstream(self, sources: list[tuple[str, str]], roots: list[str] = ()) -> list[str]:
        """The running pipelines reached from these branches and root pipelines (roots included)."""
        found, frontier = set(roots), list(sources) + [self.output(p) for p in roots if p in self.pipelines]
        while frontier:
            for p in self.readers.get(frontier.pop(), ()):
                if p not in found and self.pipelines[p].state == "running":
                    found.add(p)
                    frontier.append(self.output(p))
        return sorted(found)

    def upstream(self, pipeline: str) -> set[str]:
        """The pipelines whose output branches `pipeline` reads, directly or not."""
        found, frontier = set(), [pipeline]
        while frontier:
            for repo, branch in self.inputs.get(frontier.pop(), ()):
                if repo in self.pipelines and repo not in found and self.output(repo) == (repo, branch):
                    found.add(repo)
                    frontier.append(repo)
        return found


class Waves:
    """Starts waves of jobs, over the metadata database."""

    def __init__(self, db: Database):
        self.db = db

    def graph(self, tx: Tx) -> Graph:
        """The pipeline graph as `tx` sees it (the runner orders jobs by it)."""
        return Graph(tx)

    def commit_landed(self, tx: Tx, repo: str, branch: str, commit_id: str, origin: str) -> None:
        """Subscriber of `Commits.on_landed`: a user commit starts a wave of its own id.
        (A job's output commit does not: its wave already holds the downstream jobs.)"""
        if origin == "user":
            self.start(tx, commit_id, [(repo, branch)], reason="commit")

    def start(self, tx: Tx, wave: str, sources, *, roots: list[str] = (), reason: str) -> list[str]:
        """Create, in `tx`, a job of `wave` for every pipeline downstream of `sources` and `roots`."""
        graph = Graph(tx)
        targets = graph.downstream(sources, roots)
        now = time.time()
        for p in targets:
            job_rows.insert_created(tx, wave, p, graph.pipelines[p].version, reason if p in roots or reason == "commit" else "upstream", now)
        return targets

    def recompute(self, tx: Tx, pipelines: set[str]) -> str | None:
        """In `tx`, start a wave at these pipelines, whose output commits were deleted:
        their outputs no longer follow from their inputs, so the next `dpl run` makes
        them again (and everything downstream).  Stopped pipelines wait for start-pipeline."""
        graph = Graph(tx)
        roots = sorted(p for p in pipelines if p in graph.pipelines and graph.pipelines[p].state == "running")
        if not roots:
            return None
        wave = uuid.uuid4().hex
        self.start(tx, wave, [], roots=roots, reason="recompute")
        return wave

    def trigger(self, pipeline: str, reason: str = "create") -> str:
        """Start a wave at `pipeline` (and everything downstream of it); return its id."""
        wave = uuid.uuid4().hex
        with self.db.write() as tx:
            self.start(tx, wave, [], roots=[pipeline], reason=reason)
        return wave
