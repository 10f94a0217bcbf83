"""Pipelines: the `pipelines`, `pipeline_versions` and `pipeline_inputs` tables.

`pipelines` holds each pipeline's current version and state; every create or
update adds a `pipeline_versions` row (the normalised spec, its hashes, the
code version), which old jobs and commits keep referring to; and
`pipeline_inputs` lists the (repo, branch) pairs a pipeline reads, the edges
of the DAG that jobs follow downstream.
"""

from __future__ import annotations

from .db import Tx


def exists(tx: Tx, name: str) -> bool:
    return tx.one("SELECT 1 FROM pipelines WHERE name=?", (name,)) is not None


def readers_of(tx: Tx, repo: str, branch: str | None = None) -> set[str]:
    """Pipelines that read `repo` (on `branch`, if given)."""
    if branch is None:
        return {r["pipeline"] for r in tx.all("SELECT pipeline FROM pipeline_inputs WHERE repo=?", (repo,))}
    return {r["pipeline"] for r in tx.all("SELECT pipeline FROM pipeline_inputs WHERE repo=? AND branch=?", (repo, branch))}


def writes_to(tx: Tx, repo: str, branch: str) -> bool:
    """Whether `repo@branch` is a pipeline's output branch."""
    return tx.one("SELECT 1 FROM pipelines WHERE name=? AND output_branch=?", (repo, branch)) is not None
