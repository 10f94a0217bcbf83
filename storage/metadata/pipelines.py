"""Pipelines: the `pipelines`, `pipeline_versions` and `pipeline_inputs` tables.

`pipelines` holds each pipeline's current version and state; every create or
update adds a `pipeline_versions` row (the normalised spec, its hashes, the
code version), which old jobs and commits keep referring to; and
`pipeline_inputs` lists the (repo, branch) pairs a pipeline reads, the edges
of the DAG that jobs follow downstream.

Specs are stored as the JSON text the engine wrote (`Spec.to_json()`, so the
stored bytes stay what the spec history records) and come back parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from .db import Row, Tx


@dataclass
class Pipeline:
    name: str
    version: int  # the current version
    spec_json: str  # the current version's normalised spec, as stored
    spec_hash: str
    transform_hash: str
    state: str  # "running" or "stopped"
    output_branch: str
    created: float
    updated: float

    # Parsed on first use: every landing commit reads all pipelines to find
    # the downstream ones, and needs none of their specs.
    @cached_property
    def spec(self) -> dict:
        return json.loads(self.spec_json)

    @classmethod
    def from_row(cls, row: Row) -> "Pipeline":
        return cls(
            name=row["name"],
            version=row["version"],
            spec_json=row["spec"],
            spec_hash=row["spec_hash"],
            transform_hash=row["transform_hash"],
            state=row["state"],
            output_branch=row["output_branch"],
            created=row["created"],
            updated=row["updated"],
        )


@dataclass
class PipelineVersion:
    name: str
    version: int
    spec: dict
    spec_hash: str
    transform_hash: str
    created: float
    history_commit: str | None  # commit in the store's spec git repository
    code: dict  # git HEAD / dirty of the work tree the spec file came from
    reprocess: int  # bumped by each update-pipeline --reprocess

    @classmethod
    def from_row(cls, row: Row) -> "PipelineVersion":
        return cls(
            name=row["name"],
            version=row["version"],
            spec=json.loads(row["spec"]),
            spec_hash=row["spec_hash"],
            transform_hash=row["transform_hash"],
            created=row["created"],
            history_commit=row["history_commit"],
            code=json.loads(row["code"]),
            reprocess=row["reprocess"],
        )


@dataclass(frozen=True)
class Input:
    """An edge of the DAG: `pipeline` reads `repo@branch`."""

    pipeline: str
    repo: str
    branch: str


# --------------------------------------------------------------- pipelines


def get(tx: Tx, name: str) -> Pipeline | None:
    row = tx.one("SELECT * FROM pipelines WHERE name=?", (name,))
    return Pipeline.from_row(row) if row is not None else None


def exists(tx: Tx, name: str) -> bool:
    return tx.one("SELECT 1 FROM pipelines WHERE name=?", (name,)) is not None


def names(tx: Tx) -> list[str]:
    return [r["name"] for r in tx.all("SELECT name FROM pipelines ORDER BY name")]


def all_pipelines(tx: Tx) -> list[Pipeline]:
    """Every pipeline, by name."""
    return [Pipeline.from_row(r) for r in tx.all("SELECT * FROM pipelines ORDER BY name")]


def state(tx: Tx, name: str) -> str | None:
    """"running" or "stopped"; None when there is no such pipeline."""
    row = tx.one("SELECT state FROM pipelines WHERE name=?", (name,))
    return row["state"] if row is not None else None


def insert(tx: Tx, name: str, version: int, spec_json: str, spec_hash: str, transform_hash: str,
           output_branch: str, created: float) -> None:
    """A new pipeline, running, at `version`."""
    tx.execute(
        "INSERT INTO pipelines (name, version, spec, spec_hash, transform_hash, state, output_branch, created, updated) "
        "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
        (name, version, spec_json, spec_hash, transform_hash, output_branch, created, created),
    )


def set_version(tx: Tx, name: str, version: int, spec_json: str, spec_hash: str, transform_hash: str,
                output_branch: str, updated: float) -> None:
    """An existing pipeline moves to a new version (its state is kept)."""
    tx.execute(
        "UPDATE pipelines SET version=?, spec=?, spec_hash=?, transform_hash=?, output_branch=?, updated=? WHERE name=?",
        (version, spec_json, spec_hash, transform_hash, output_branch, updated, name),
    )


def set_state(tx: Tx, name: str, state: str) -> None:
    tx.execute("UPDATE pipelines SET state=? WHERE name=?", (state, name))


def delete(tx: Tx, name: str) -> None:
    """The pipeline and its input edges; its versions stay (see `last_version`)."""
    tx.execute("DELETE FROM pipeline_inputs WHERE pipeline=?", (name,))
    tx.execute("DELETE FROM pipelines WHERE name=?", (name,))


# ---------------------------------------------------------------- versions


def version(tx: Tx, name: str, number: int) -> PipelineVersion | None:
    row = tx.one("SELECT * FROM pipeline_versions WHERE name=? AND version=?", (name, number))
    return PipelineVersion.from_row(row) if row is not None else None


def versions(tx: Tx, name: str) -> list[PipelineVersion]:
    """Every version of a pipeline, oldest first."""
    return [PipelineVersion.from_row(r) for r in tx.all("SELECT * FROM pipeline_versions WHERE name=? ORDER BY version", (name,))]


def last_version(tx: Tx, name: str) -> int:
    """The highest version number a pipeline of this name ever had; 0 if none.

    Versions outlive a delete, so a re-created pipeline keeps counting."""
    row = tx.one("SELECT MAX(version) AS v FROM pipeline_versions WHERE name=?", (name,))
    return row["v"] or 0


def last_reprocess(tx: Tx, name: str) -> int:
    """How many times the pipeline was updated with --reprocess so far."""
    row = tx.one("SELECT MAX(reprocess) AS r FROM pipeline_versions WHERE name=?", (name,))
    return row["r"] or 0


def insert_version(tx: Tx, name: str, number: int, spec_json: str, spec_hash: str, transform_hash: str,
                   created: float, history_commit: str | None, code: dict, reprocess: int) -> None:
    tx.execute(
        "INSERT INTO pipeline_versions (name, version, spec, spec_hash, transform_hash, created, history_commit, code, reprocess) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, number, spec_json, spec_hash, transform_hash, created, history_commit, json.dumps(code), reprocess),
    )


# ------------------------------------------------------------------ inputs


def inputs(tx: Tx, name: str) -> list[Input]:
    """The (repo, branch) pairs a pipeline reads, sorted."""
    rows = tx.all("SELECT pipeline, repo, branch FROM pipeline_inputs WHERE pipeline=? ORDER BY repo, branch", (name,))
    return [Input(r["pipeline"], r["repo"], r["branch"]) for r in rows]


def all_inputs(tx: Tx) -> list[Input]:
    """Every edge of the DAG, by pipeline then repo."""
    rows = tx.all("SELECT pipeline, repo, branch FROM pipeline_inputs ORDER BY pipeline, repo, branch")
    return [Input(r["pipeline"], r["repo"], r["branch"]) for r in rows]


def set_inputs(tx: Tx, name: str, pairs: list[tuple[str, str]]) -> None:
    """Replace a pipeline's input edges with `pairs` of (repo, branch)."""
    tx.execute("DELETE FROM pipeline_inputs WHERE pipeline=?", (name,))
    tx.executemany(
        "INSERT INTO pipeline_inputs (pipeline, repo, branch) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(name, repo, branch) for repo, branch in pairs],
    )


def readers_of(tx: Tx, repo: str, branch: str | None = None) -> set[str]:
    """Pipelines that read `repo` (on `branch`, if given)."""
    if branch is None:
        return {r["pipeline"] for r in tx.all("SELECT pipeline FROM pipeline_inputs WHERE repo=?", (repo,))}
    return {r["pipeline"] for r in tx.all("SELECT pipeline FROM pipeline_inputs WHERE repo=? AND branch=?", (repo, branch))}


def writes_to(tx: Tx, repo: str, branch: str) -> bool:
    """Whether `repo@branch` is a pipeline's output branch."""
    return tx.one("SELECT 1 FROM pipelines WHERE name=? AND output_branch=?", (repo, branch)) is not None
