"""Datums and lineage: the `datums`, `datum_outputs` and `lineage` tables.

`datums` records every datum a job ran (inputs, logs, outcome); a datum's
outputs are a row range of an Arrow table in the chunk store
(`datum_outputs`, one per (pipeline, datum): the job that really ran it),
and `lineage` indexes which datums read which input file versions, so
provenance and subvenance are lookups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from .db import Row, Tx

IN_CHUNK = 500  # ids per `IN (...)` list: far below every backend's parameter limit


@dataclass
class Datum:
    """One run of a datum by a job."""

    pipeline: str
    job: str
    datum: str  # the datum id, hex
    key: str  # the glob matches it is made of
    state: str  # "success" or "failed"
    reason: str | None  # why it ran: new input, changed content, spec changed, ...
    started: float | None
    finished: float | None
    tries: int
    exit_code: int | None
    stdout: str | None
    stderr: str | None
    error: str | None
    outputs: int  # output files
    # [{name, repo, commit, path, files: [[path, hash, size]]}], parsed on use:
    # most readers (a job's datum listing) never look at it.
    inputs_json: str = "[]"

    @property
    def inputs(self) -> list[dict]:
        return json.loads(self.inputs_json)

    @classmethod
    def from_row(cls, row: Row) -> "Datum":
        return cls(
            pipeline=row["pipeline"],
            job=row["job"],
            datum=row["datum"],
            key=row["key"],
            state=row["state"],
            reason=row["reason"],
            started=row["started"],
            finished=row["finished"],
            tries=row["tries"],
            exit_code=row["exit_code"],
            stdout=row["stdout"],
            stderr=row["stderr"],
            error=row["error"],
            outputs=row["outputs"],
            inputs_json=row["inputs"],
        )


@dataclass
class DatumOutput:
    """Where a datum's output rows are: `count` rows from `start` of the Arrow table `batch`."""

    pipeline: str
    datum: str
    batch: str  # object id, hex; "" when the datum wrote nothing
    start: int
    count: int
    job: str  # the job that really ran it

    @classmethod
    def from_row(cls, row: Row) -> "DatumOutput":
        return cls(row["pipeline"], row["datum"], row["batch"], row["start"], row["count"], row["job"])


class Read(NamedTuple):
    """A lineage edge: datum `datum` of `pipeline` read `repo:path` with content `hash`."""

    repo: str
    path: str
    hash: str  # hex
    pipeline: str
    datum: str


def _many(rows) -> list[Datum]:
    return [Datum.from_row(r) for r in rows]


def _chunks(ids: list[str]):
    for i in range(0, len(ids), IN_CHUNK):
        part = ids[i : i + IN_CHUNK]
        yield part, ",".join("?" * len(part))


# ------------------------------------------------------------------ datums


_ORDER = {"datum": " ORDER BY datum", "started": " ORDER BY started"}


def of_job(tx: Tx, pipeline: str, job: str, prefix: str | None = None, *, order: str = "datum") -> list[Datum]:
    """The datums a job ran (those whose id starts with `prefix`, if given), by id or in the order they started."""
    if prefix:
        sql, args = "SELECT * FROM datums WHERE pipeline=? AND job=? AND datum >= ? AND datum < ?", (pipeline, job, prefix, prefix + "g")
    else:
        sql, args = "SELECT * FROM datums WHERE pipeline=? AND job=?", (pipeline, job)
    return _many(tx.all(sql + _ORDER[order], args))


def page_of_job(tx: Tx, pipeline: str, job: str, *, state: str | None = None, after: str | None = None,
                limit: int) -> list[Datum]:
    """Up to `limit` datums the job ran (in `state` only, if given), by id, after the id `after`.

    The primary key (pipeline, job, datum) walks them in order and stops at
    `limit`, so a page costs the same at 100,000 datums as at 100; a caller
    listing failed datums first asks for state 'failed' (a range of the partial
    index datums_failed, however few of the job's datums failed), then 'success'."""
    sql, args = "SELECT * FROM datums WHERE pipeline=? AND job=?", [pipeline, job]
    if state == "failed":
        sql += " AND state='failed'"  # written out: a planner takes a partial index only when the query's text implies its WHERE
    elif state is not None:
        sql, args = sql + " AND state=?", [*args, state]
    if after is not None:
        sql, args = sql + " AND datum > ?", [*args, after]
    return _many(tx.all(sql + " ORDER BY datum LIMIT ?", [*args, limit]))


def state_of(tx: Tx, pipeline: str, job: str, datum: str) -> str | None:
    """The state of one datum a job ran (None if it did not run it)."""
    row = tx.one("SELECT state FROM datums WHERE pipeline=? AND job=? AND datum=?", (pipeline, job, datum))
    return row["state"] if row is not None else None


def by_prefix(tx: Tx, pipeline: str, prefix: str) -> list[Datum]:
    """Every run by any job of the pipeline's datums whose id starts with `prefix`, newest first."""
    return _many(tx.all(
        "SELECT * FROM datums WHERE pipeline=? AND datum >= ? AND datum < ? ORDER BY finished DESC",
        (pipeline, prefix, prefix + "g"),
    ))


def any_run(tx: Tx, pipeline: str, datum: str) -> Datum | None:
    """One run of this datum, by any job."""
    row = tx.one("SELECT * FROM datums WHERE pipeline=? AND datum=? LIMIT 1", (pipeline, datum))
    return Datum.from_row(row) if row is not None else None


def first_success(tx: Tx, pipeline: str, datum: str) -> Datum | None:
    """The first successful run of this datum: the one whose outputs a file carries."""
    row = tx.one("SELECT * FROM datums WHERE pipeline=? AND datum=? AND state='success' ORDER BY finished LIMIT 1", (pipeline, datum))
    return Datum.from_row(row) if row is not None else None


def failed_among(tx: Tx, pipeline: str, ids: list[str]) -> set[str]:
    """Which of these datum ids failed in some job of the pipeline."""
    out: set[str] = set()
    for part, marks in _chunks(ids):
        rows = tx.all(f"SELECT datum FROM datums WHERE pipeline=? AND state='failed' AND datum IN ({marks})", [pipeline, *part])
        out.update(r["datum"] for r in rows)
    return out


def reason_counts(tx: Tx, pipeline: str, job: str) -> dict[str | None, int]:
    """How many of the datums a job ran were run for each reason.

    Counted by the database from the index on (pipeline, job, reason)
    (migration 8) alone: a job of 100,000 datums returns a row per distinct
    reason, and no datum's row (its logs, its inputs) is read."""
    rows = tx.all("SELECT reason, COUNT(*) AS n FROM datums WHERE pipeline=? AND job=? GROUP BY reason", (pipeline, job))
    return {r["reason"]: r["n"] for r in rows}


def naming_commit(tx: Tx, commit_id: str) -> list[Datum]:
    """Datum runs whose inputs may name `commit_id` (a superset: the inputs' text contains it)."""
    return _many(tx.all("SELECT * FROM datums WHERE inputs LIKE ?", (f"%{commit_id}%",)))


def set_inputs(tx: Tx, pipeline: str, job: str, datum: str, inputs: list[dict]) -> None:
    tx.execute("UPDATE datums SET inputs=? WHERE pipeline=? AND job=? AND datum=?", (json.dumps(inputs), pipeline, job, datum))


def record(tx: Tx, runs: list[Datum], outputs: list[DatumOutput], reads: list[Read]) -> None:
    """Record a batch of finished datums: their runs, where their outputs are, and what they read.

    A datum run again (by a resumed job) replaces its record and its outputs."""
    tx.executemany(
        "INSERT INTO datums (pipeline, job, datum, key, state, reason, inputs, started, finished, tries, exit_code, "
        "stdout, stderr, error, outputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (pipeline, job, datum) DO UPDATE SET key=excluded.key, state=excluded.state, reason=excluded.reason, "
        "inputs=excluded.inputs, started=excluded.started, finished=excluded.finished, tries=excluded.tries, "
        "exit_code=excluded.exit_code, stdout=excluded.stdout, stderr=excluded.stderr, error=excluded.error, "
        "outputs=excluded.outputs",
        [(d.pipeline, d.job, d.datum, d.key, d.state, d.reason, d.inputs_json, d.started, d.finished, d.tries,
          d.exit_code, d.stdout, d.stderr, d.error, d.outputs) for d in runs],
    )
    if outputs:
        tx.executemany(
            "INSERT INTO datum_outputs (pipeline, datum, batch, start, count, job) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pipeline, datum) DO UPDATE SET batch=excluded.batch, start=excluded.start, "
            "count=excluded.count, job=excluded.job",
            [(o.pipeline, o.datum, o.batch, o.start, o.count, o.job) for o in outputs],
        )
    if reads:
        tx.executemany(
            "INSERT INTO lineage (repo, path, hash, pipeline, datum) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            reads,
        )


def delete_of_job(tx: Tx, pipeline: str, job: str) -> None:
    """What only this job explains: its datum runs, the outputs it cached, and
    the lineage of datums no other job ran."""
    tx.execute("DELETE FROM datum_outputs WHERE pipeline=? AND job=?", (pipeline, job))
    gone = [r["datum"] for r in tx.all("SELECT datum FROM datums WHERE pipeline=? AND job=?", (pipeline, job))]
    tx.execute("DELETE FROM datums WHERE pipeline=? AND job=?", (pipeline, job))
    for datum in gone:
        if tx.one("SELECT 1 FROM datums WHERE pipeline=? AND datum=? LIMIT 1", (pipeline, datum)) is None:
            tx.execute("DELETE FROM lineage WHERE pipeline=? AND datum=?", (pipeline, datum))


def delete_of_pipeline(tx: Tx, pipeline: str) -> None:
    """Every datum run, cached output and lineage edge of a pipeline."""
    tx.execute("DELETE FROM datum_outputs WHERE pipeline=?", (pipeline,))
    tx.execute("DELETE FROM datums WHERE pipeline=?", (pipeline,))
    tx.execute("DELETE FROM lineage WHERE pipeline=?", (pipeline,))


# ----------------------------------------------------------------- outputs


def outputs_of(tx: Tx, pipeline: str, ids: list[str]) -> dict[str, DatumOutput]:
    """Where the outputs of these datums are, for those that have some recorded."""
    out: dict[str, DatumOutput] = {}
    for part, marks in _chunks(ids):
        rows = tx.all(f"SELECT * FROM datum_outputs WHERE pipeline=? AND datum IN ({marks})", [pipeline, *part])
        out.update((r["datum"], DatumOutput.from_row(r)) for r in rows)
    return out


def output(tx: Tx, pipeline: str, datum: str) -> DatumOutput | None:
    row = tx.one("SELECT * FROM datum_outputs WHERE pipeline=? AND datum=?", (pipeline, datum))
    return DatumOutput.from_row(row) if row is not None else None


def outputs_in_batch(tx: Tx, batch: str) -> list[DatumOutput]:
    return [DatumOutput.from_row(r) for r in tx.all("SELECT * FROM datum_outputs WHERE batch=?", (batch,))]


class BatchUse(NamedTuple):
    pipeline: str
    job: str
    batch: str


def batch_uses(tx: Tx) -> list[BatchUse]:
    """Every (pipeline, job, batch) whose datum outputs are in a batch object."""
    rows = tx.all("SELECT DISTINCT pipeline, job, batch FROM datum_outputs WHERE batch != ''")
    return [BatchUse(r["pipeline"], r["job"], r["batch"]) for r in rows]


def forget_batch(tx: Tx, batch: str) -> None:
    """A lost batch: its datums' outputs are no longer cached (they run again when needed)."""
    tx.execute("DELETE FROM datum_outputs WHERE batch=?", (batch,))


# ----------------------------------------------------------------- lineage


def readers(tx: Tx, repo: str, path: str, hash_hex: str) -> list[tuple[str, str]]:
    """(pipeline, datum) of every datum that read this file version."""
    rows = tx.all("SELECT pipeline, datum FROM lineage WHERE repo=? AND path=? AND hash=? ORDER BY pipeline, datum", (repo, path, hash_hex))
    return [(r["pipeline"], r["datum"]) for r in rows]
