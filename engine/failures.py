"""When a job does not succeed: what it says, and what it leaves behind.

As in Pachyderm, a job runs every datum even after one fails, so its error
names every failed datum (with its exit code and the tail of its log) and a
user fixes N bad inputs in one round, not N.  A datum's state says what
really happened to it in that job: it ran and succeeded (`success`), ran and
failed (`failed`), was carried forward or found already processed
(`skipped`), or never ran (`not-run`: the job timed out or was stopped first).

A job that fails, or cannot run because an upstream job did not succeed
(Pachyderm's JOB_UNRUNNABLE), leaves a *failed output commit*: listed by
`list-commit` and `inspect-commit` with the job's error as its description,
holding no file and on no branch, so nothing half-made is ever read
downstream.
"""

from __future__ import annotations

import uuid

from .executors.base import DatumResult
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.db import Tx

SUCCESS, FAILED, SKIPPED, NOT_RUN = "success", "failed", "skipped", "not-run"

LOG_TAIL = 2000  # characters of a failed datum's log quoted in the job's error, when one datum failed
LOG_TAIL_EACH = 600  # ... and for each, when several did (the error must stay readable)
LOG_LINES_EACH = 10
LISTED = 20  # failed datums quoted in full; the rest are counted (`dpl list-datum` has them all)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value replaced, longest first, before any cut: no part of a value survives."""
    for value in secrets:
        text = text.replace(value, "***")
    return text


def datum_error(pipeline: str, datum: str, key: str, result: DatumResult, tries: int, secrets: list[str], *, tail_chars: int = LOG_TAIL,
                tail_lines: int | None = None) -> str:
    """One failed datum: its id, why it failed (with its exit code), and the tail of its log."""
    log_text = scrub((result.stderr or result.stdout or b"").decode("utf-8", "replace"), secrets)
    error = scrub(str(result.error), secrets)
    tail = log_text[-tail_chars:].strip()
    if tail_lines is not None:
        tail = "\n".join(tail.splitlines()[-tail_lines:])
    code = f" (exit code {result.exit_code})" if result.exit_code not in (None, 0) and "code" not in (result.error or "") else ""
    return (
        f"Datum {datum[:12]} of pipeline {pipeline!r} failed after {tries} {'try' if tries == 1 else 'tries'}: {error}{code}."
        + (f"\n--- log tail of {key} ---\n{tail}" if tail else "")
    )


def job_error(pipeline: str, job: str, failures: list[tuple[str, str, DatumResult, int]], *, total: int, not_run: int,
              timed_out: str | None, secrets: list[str]) -> str:
    """The error of a job whose datums did not all succeed: a headline, then every failed datum.

    `failures` are (datum id, key, result, tries); `timed_out` is the job_timeout
    as the spec wrote it when that is what stopped the job."""
    failures = sorted(failures, key=lambda f: f[1])
    parts = []
    counts = [f"{len(failures)} of {total} datums failed"] if failures else []
    if not_run:
        counts.append(f"{not_run} not run")
    if timed_out:
        parts.append(f"Job {job[:12]} of pipeline {pipeline!r} timed out after {timed_out} (job_timeout)"
                     + (f": {', '.join(counts)}." if counts else "."))
    else:
        parts.append(f"Job {job[:12]} of pipeline {pipeline!r} failed: {', '.join(counts) or 'its datums did not all run'}.")
    one = len(failures) == 1
    for datum, key, result, tries in failures[:LISTED]:
        parts.append(datum_error(pipeline, datum, key, result, tries, secrets, tail_chars=LOG_TAIL if one else LOG_TAIL_EACH,
                                 tail_lines=None if one else LOG_LINES_EACH))
    if len(failures) > LISTED:
        parts.append(f"... and {len(failures) - LISTED} more failed datums: see `dpl list-datum {pipeline}@{job[:12]}`.")
    return "\n".join(parts)


def record_failed_output(tx: Tx, pipeline: str, job: str, branch: str, error: str, now: float) -> str | None:
    """Keep the output commit of a job that did not succeed, marked with its error; its id (None without an output repo)."""
    if not repo_rows.exists(tx, pipeline):
        return None
    commit_id = uuid.uuid4().hex if commit_rows.exists(tx, pipeline, job) else job
    headline = (error.strip().splitlines() or ["the job did not succeed"])[0]
    commit_rows.insert_failed(tx, pipeline, commit_id, branch, now, headline, job)
    return commit_id


def keep_failed_output(tx: Tx, pipeline: str, job: str, error: str, now: float) -> None:
    """A job that failed or was stopped keeps its output commit, marked with `error`, as Pachyderm
    finishes a killed or failed job's output commit with its error: `output_commit` names it."""
    row = pipeline_rows.get(tx, pipeline)
    output = record_failed_output(tx, pipeline, job, row.output_branch if row is not None else "master", error, now)
    if output is not None:
        job_rows.set_failed_output(tx, pipeline, job, output)
