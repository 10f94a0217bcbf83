"""Jobs: the `jobs` table.

A job is one pipeline's share of a wave (the global id it shares with the
commit that started it).  It is claimed by compare-and-swap on its owner and
kept by a heartbeat, so two runners never hold one job; every write a runner
makes to its job after the claim names the owner, so a runner that was taken
over changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .db import Row, Tx

UNFINISHED = ("created", "running")


@dataclass
class Job:
    pipeline: str
    id: str  # the global id of the wave
    version: int  # the pipeline version it runs
    state: str  # created, running, success, failure, unrunnable, killed (stop-job)
    reason: str  # commit, create, update, reprocess, start, upstream, recompute (its output commit was deleted)
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    owner: str | None  # host:pid:nonce of the runner holding it
    inputs: list[dict]  # [{name, repo, branch, commit}], pinned when it starts; [] before
    salt: str | None  # what the datum ids were made with
    executor: dict  # kind, sandbox, image digest
    datum_list: str | None  # object id of the Arrow table of every datum
    output_commit: str | None
    processed: int
    skipped: int
    failed: int
    total: int
    error: str | None
    code: dict  # the host code it ran (engine/code.py)

    @classmethod
    def from_row(cls, row: Row) -> "Job":
        return cls(
            pipeline=row["pipeline"],
            id=row["id"],
            version=row["version"],
            state=row["state"],
            reason=row["reason"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            heartbeat=row["heartbeat"],
            owner=row["owner"],
            inputs=json.loads(row["inputs"]),
            salt=row["salt"],
            executor=json.loads(row["executor"]),
            datum_list=row["datum_list"],
            output_commit=row["output_commit"],
            processed=row["processed"],
            skipped=row["skipped"],
            failed=row["failed"],
            total=row["total"],
            error=row["error"],
            code=json.loads(row["code"]),
        )


def _many(rows) -> list[Job]:
    return [Job.from_row(r) for r in rows]


# ------------------------------------------------------------------- reads


def get(tx: Tx, pipeline: str, job_id: str) -> Job | None:
    row = tx.one("SELECT * FROM jobs WHERE pipeline=? AND id=?", (pipeline, job_id))
    return Job.from_row(row) if row is not None else None


def by_prefix(tx: Tx, prefix: str, pipeline: str | None = None) -> list[Job]:
    """Jobs (of `pipeline`, if given) whose id starts with the lower-case hex `prefix`."""
    if pipeline:
        return _many(tx.all("SELECT * FROM jobs WHERE pipeline=? AND id >= ? AND id < ?", (pipeline, prefix, prefix + "g")))
    return _many(tx.all("SELECT * FROM jobs WHERE id >= ? AND id < ?", (prefix, prefix + "g")))


def listing(tx: Tx, pipeline: str | None = None, wave: str | None = None, limit: int | None = None) -> list[Job]:
    """Jobs newest first (of `pipeline`, of waves whose id starts with `wave`)."""
    sql, args = "SELECT * FROM jobs WHERE 1=1", []
    if pipeline:
        sql += " AND pipeline=?"
        args.append(pipeline)
    if wave:
        sql += " AND id >= ? AND id < ?"
        args += [wave, wave + "g"]
    sql += " ORDER BY created DESC, pipeline"
    if limit:
        sql += " LIMIT ?"
        args.append(int(limit))
    return _many(tx.all(sql, args))


def all_jobs(tx: Tx) -> list[Job]:
    return _many(tx.all("SELECT * FROM jobs"))


def latest(tx: Tx, pipeline: str) -> Job | None:
    """A pipeline's newest job."""
    row = tx.one("SELECT * FROM jobs WHERE pipeline=? ORDER BY created DESC LIMIT 1", (pipeline,))
    return Job.from_row(row) if row is not None else None


def any_unfinished(tx: Tx, wave: str | None = None) -> bool:
    """Whether a job (of this wave) is still created or running."""
    if wave is None:
        return tx.one("SELECT 1 FROM jobs WHERE state IN ('created', 'running') LIMIT 1") is not None
    return tx.one("SELECT 1 FROM jobs WHERE id=? AND state IN ('created', 'running') LIMIT 1", (wave,)) is not None


def unfinished(tx: Tx) -> list[Job]:
    """Jobs still to run, in the order runners take them: oldest first.

    The jobs of one wave share `created`, so ties are broken by pipeline then
    id: that is the order a wave inserts its jobs in (by pipeline name), and,
    unlike SQLite's rowid, it exists in PostgreSQL and is the same on both."""
    return _many(tx.all("SELECT * FROM jobs WHERE state IN ('created', 'running') ORDER BY created, pipeline, id"))


def pending_of_wave(tx: Tx, wave: str) -> list[Job]:
    """Unfinished jobs of a wave that have not pinned their inputs yet."""
    return _many(tx.all("SELECT * FROM jobs WHERE id=? AND state IN ('created', 'running') AND inputs='[]'", (wave,)))


def unsuccessful_in_wave(tx: Tx, wave: str) -> list[str]:
    """Pipelines whose job in this wave failed or could not run."""
    return [r["pipeline"] for r in tx.all("SELECT pipeline FROM jobs WHERE id=? AND state IN ('failure', 'unrunnable')", (wave,))]


def states_in_wave(tx: Tx, wave: str) -> dict[str, str]:
    """pipeline -> state of each job of this wave."""
    return {r["pipeline"]: r["state"] for r in tx.all("SELECT pipeline, state FROM jobs WHERE id=?", (wave,))}


def last_finished(tx: Tx, pipeline: str) -> Job | None:
    """A pipeline's newest job that has ended (succeeded, failed or could not run): what its output branch stands for."""
    row = tx.one(
        "SELECT * FROM jobs WHERE pipeline=? AND state IN ('success', 'failure', 'unrunnable') ORDER BY created DESC, id DESC LIMIT 1",
        (pipeline,),
    )
    return Job.from_row(row) if row is not None else None


def made(tx: Tx, pipeline: str, output_commit: str) -> list[Job]:
    """The jobs whose output commit is `pipeline@output_commit`."""
    return _many(tx.all("SELECT * FROM jobs WHERE pipeline=? AND output_commit=?", (pipeline, output_commit)))


def with_datum_list(tx: Tx, datum_list: str | None = None) -> list[Job]:
    """Jobs that have a datum list (that one, if given)."""
    if datum_list is None:
        return _many(tx.all("SELECT * FROM jobs WHERE datum_list IS NOT NULL"))
    return _many(tx.all("SELECT * FROM jobs WHERE datum_list=?", (datum_list,)))


def succeeded_since(tx: Tx, pipeline: str, since: float) -> list[Job]:
    """A pipeline's successful jobs with a datum list that finished at or after `since`, oldest first."""
    return _many(tx.all(
        "SELECT * FROM jobs WHERE pipeline=? AND state='success' AND datum_list IS NOT NULL AND finished >= ? ORDER BY finished",
        (pipeline, since),
    ))


def running_owners(tx: Tx) -> list[str]:
    """The owners of running jobs."""
    return [r["owner"] for r in tx.all("SELECT owner FROM jobs WHERE state='running' AND owner IS NOT NULL")]


def naming_commit(tx: Tx, commit_id: str) -> list[Job]:
    """Jobs whose inputs may name `commit_id` (a superset: the inputs' text contains it)."""
    return _many(tx.all("SELECT * FROM jobs WHERE inputs LIKE ?", (f"%{commit_id}%",)))


# ------------------------------------------------------------------ writes


def insert_created(tx: Tx, wave: str, pipeline: str, version: int, reason: str, created: float) -> None:
    """A job to run, unless the wave already has one for this pipeline."""
    tx.execute(
        "INSERT INTO jobs (id, pipeline, version, state, reason, created) VALUES (?, ?, ?, 'created', ?, ?) ON CONFLICT DO NOTHING",
        (wave, pipeline, version, reason, created),
    )


def claim(tx: Tx, pipeline: str, job_id: str, owner: str, now: float) -> None:
    """`owner` runs the job from now on (the caller checked that nobody else holds it)."""
    tx.execute(
        "UPDATE jobs SET state='running', owner=?, heartbeat=?, started=COALESCE(started, ?) WHERE pipeline=? AND id=?",
        (owner, now, now, pipeline, job_id),
    )


def beat(tx: Tx, pipeline: str, job_id: str, owner: str, now: float) -> None:
    """The owner's heartbeat: it still holds the job."""
    tx.execute("UPDATE jobs SET heartbeat=? WHERE pipeline=? AND id=? AND owner=?", (now, pipeline, job_id, owner))


def mark_unrunnable(tx: Tx, pipeline: str, job_id: str, finished: float, error: str, output_commit: str | None = None) -> None:
    """The job cannot run (an upstream job did not succeed); `output_commit` is its failed output commit."""
    tx.execute(
        "UPDATE jobs SET state='unrunnable', finished=?, error=?, output_commit=? WHERE pipeline=? AND id=?",
        (finished, error, output_commit, pipeline, job_id),
    )


def fail(tx: Tx, pipeline: str, job_id: str, owner: str, finished: float, error: str) -> bool:
    """The job failed, if `owner` still holds it; False if it no longer does."""
    cur = tx.execute(
        "UPDATE jobs SET state='failure', finished=?, error=? WHERE pipeline=? AND id=? AND owner=?",
        (finished, error, pipeline, job_id, owner),
    )
    return cur.rowcount == 1


def set_failed_output(tx: Tx, pipeline: str, job_id: str, output_commit: str) -> None:
    """The failed output commit a job that did not succeed leaves (see engine/failures.py)."""
    tx.execute("UPDATE jobs SET output_commit=? WHERE pipeline=? AND id=? AND state IN ('failure', 'unrunnable', 'killed')",
               (output_commit, pipeline, job_id))


def release(tx: Tx, pipeline: str, job_id: str, owner: str) -> bool:
    """`owner` stops running the job without finishing it (Ctrl-C): it waits, created, for the next runner."""
    cur = tx.execute(
        "UPDATE jobs SET state='created', owner=NULL, heartbeat=NULL WHERE pipeline=? AND id=? AND owner=? AND state='running'",
        (pipeline, job_id, owner),
    )
    return cur.rowcount == 1


def succeed(tx: Tx, pipeline: str, job_id: str, owner: str, finished: float, output_commit: str) -> bool:
    """The job succeeded with this output commit; False if `owner` no longer holds it."""
    cur = tx.execute(
        "UPDATE jobs SET state='success', finished=?, output_commit=? WHERE pipeline=? AND id=? AND owner=?",
        (finished, output_commit, pipeline, job_id, owner),
    )
    return cur.rowcount == 1


def set_inputs(tx: Tx, pipeline: str, job_id: str, inputs: list[dict]) -> None:
    tx.execute("UPDATE jobs SET inputs=? WHERE pipeline=? AND id=?", (json.dumps(inputs), pipeline, job_id))


def set_plan(tx: Tx, pipeline: str, job_id: str, *, salt: str, executor: dict, code: dict, total: int) -> None:
    """What the job runs with, and how many datums it has, once they are cut."""
    tx.execute(
        "UPDATE jobs SET salt=?, executor=?, code=?, total=? WHERE pipeline=? AND id=?",
        (salt, json.dumps(executor), json.dumps(code), total, pipeline, job_id),
    )


def set_outcome(tx: Tx, pipeline: str, job_id: str, *, datum_list: str, processed: int, skipped: int, failed: int) -> None:
    """The job's datum list and counts, once its datums ran."""
    tx.execute(
        "UPDATE jobs SET datum_list=?, processed=?, skipped=?, failed=? WHERE pipeline=? AND id=?",
        (datum_list, processed, skipped, failed, pipeline, job_id),
    )


def set_datum_list(tx: Tx, pipeline: str, job_id: str, datum_list: str | None) -> None:
    tx.execute("UPDATE jobs SET datum_list=? WHERE pipeline=? AND id=?", (datum_list, pipeline, job_id))


def move_output(tx: Tx, pipeline: str, old: str, new: str) -> None:
    """Jobs that made `pipeline@old` now name `pipeline@new` (squashing moves provenance to the heir)."""
    tx.execute("UPDATE jobs SET output_commit=? WHERE pipeline=? AND output_commit=?", (new, pipeline, old))


def delete(tx: Tx, pipeline: str, job_id: str) -> None:
    tx.execute("DELETE FROM jobs WHERE pipeline=? AND id=?", (pipeline, job_id))


def delete_of_pipeline(tx: Tx, pipeline: str) -> None:
    tx.execute("DELETE FROM jobs WHERE pipeline=?", (pipeline,))


def kill(tx: Tx, pipeline: str, job_id: str, finished: float, error: str) -> bool:
    """Stop an unfinished job (`dpl stop-job`): it is killed, and whoever ran it holds it no more,
    so a runner's late success or failure (both compare-and-swap on the owner) changes nothing."""
    cur = tx.execute(
        "UPDATE jobs SET state='killed', finished=?, error=?, owner=NULL, heartbeat=NULL "
        "WHERE pipeline=? AND id=? AND state IN ('created', 'running')",
        (finished, error, pipeline, job_id),
    )
    return cur.rowcount == 1
