"""Why each datum of a job runs: what a user asks when a job does more than expected.

A datum runs because its input is new, its content changed (naming the
files), it failed before, or the ids' salt changed for every datum: the spec,
the step's code, or a reprocess request.  `dpl inspect-job` and `list-datum`
show these reasons; `jobrun.JobRun` asks for them before it runs anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from . import code as code_mod
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows

if TYPE_CHECKING:
    from .jobrun import JobRun

DETAILED = 10_000  # above this many datums to run, reasons are not looked up one by one


def reasons(run: "JobRun", dset, to_run: list[int], prev_table, prev_job: job_rows.Job | None, salt: str) -> dict[int, str]:
    """Why each datum of `to_run` runs, by its index in `dset`."""
    if not to_run:
        return {}
    if prev_job is None:
        return {i: "new input" for i in to_run}
    if prev_job.salt != salt:
        return {i: why_all(run, prev_job) for i in to_run}
    db = run.jobs.db
    prev_by_key = {}
    if prev_table is not None and len(to_run) < DETAILED:
        wanted = pa.array(sorted({dset.key(i) for i in to_run}), pa.string())
        hits = prev_table.filter(pc.is_in(prev_table["key"], value_set=wanted))
        prev_by_key = {k: d.hex() for d, k in zip(hits["datum"].to_pylist(), hits["key"].to_pylist())}
    failed_before = set()
    if len(to_run) < DETAILED:
        failed_before = datum_rows.failed_among(db, run.pipeline, [dset.ids[j].hex() for j in to_run])
    out = {}
    for i in to_run:
        key = dset.key(i)
        if dset.ids[i].hex() in failed_before:
            out[i] = "retried after failure"
        elif key in prev_by_key:
            out[i] = "changed content: " + changed_files(run, dset, i, prev_by_key[key])
        else:
            out[i] = "new input"
    return out


def why_all(run: "JobRun", prev_job: job_rows.Job) -> str:
    """Why a job reruns every datum: the ids' salt changed since the last job."""
    if run.job.reason == "reprocess":
        return "reprocess requested"
    if prev_job.version == run.job.version or _same_transform(run, prev_job.version):
        changed = code_mod.changed_files(prev_job.code or {}, run.code)
        if changed:
            return "code changed: " + ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return "spec changed"


def _same_transform(run: "JobRun", version: int) -> bool:
    row = pipeline_rows.version(run.jobs.db, run.pipeline, version)
    return row is not None and row.transform_hash == run.spec.transform_hash()


def changed_files(run: "JobRun", dset, i: int, prev_datum: str) -> str:
    """The input files of datum `i` that differ from those of `prev_datum` (same key, earlier content)."""
    prev = datum_rows.any_run(run.jobs.db, run.pipeline, prev_datum)
    if prev is None:
        return dset.key(i)
    before = {(inp["name"], f[0]): f[1] for inp in prev.inputs for f in inp["files"]}
    now = {}
    for p, u in dset.tuples[i]:
        pin = dset.inputs[p]
        unit = pin.matches.unit(u)
        for path, h in zip(unit["path"].to_pylist(), unit["hash"].to_pylist()):
            now[(pin.name, path)] = h.hex()
    changed = sorted(f"{n}:{p}" for (n, p), h in now.items() if before.get((n, p)) != h)
    changed += sorted(f"{n}:{p} (deleted)" for (n, p) in before if (n, p) not in now)
    return ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "") if changed else dset.key(i)
