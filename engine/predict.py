"""Predict a job before running it: which datums a spec would make, which would run, and why.

`dpl list-datum -f spec.json` and `create-pipeline --dry-run` answer "what
would this cost?" from the inputs as they are now.  The plan is the job
runner's own (`datums.pin`/`build` with the salt `JobRun._salt` would use,
then the skip rules of `JobRun._run`: a datum in the current output's job
is carried forward, one processed by any earlier job is reused), and the
reasons are `reasons.reasons`, so a prediction and the job that follows
say the same thing.  Nothing is written: no job row, no commit, no chunk.

Two things a prediction cannot know for sure, and guesses the way a job
would most likely see them: a Docker image's digest is taken from the last
job when it ran the same image (a re-pushed tag shows up only when the job
runs), and the step's code directory is the spec file's directory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import code as code_mod
from . import datums as datums_mod
from . import reasons as reasons_mod
from . import spec as specs
from ..storage import index
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from .errors import InvalidSpec

if TYPE_CHECKING:
    from .store import Store

ALREADY_DONE = "already done"


@dataclass
class Prediction:
    pipeline: str
    exists: bool  # the pipeline exists (an update) or not (a create)
    datums: list[dict]  # {datum, key, action: run|skip, reason}
    inputs: list[dict]  # {name, repo, branch, commit}

    @property
    def to_run(self) -> int:
        return sum(1 for d in self.datums if d["action"] == "run")

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for d in self.datums:
            why = d["reason"].split(":", 1)[0]
            counts[why] = counts.get(why, 0) + 1
        return {"pipeline": self.pipeline, "exists": self.exists, "total": len(self.datums), "run": self.to_run,
                "skip": len(self.datums) - self.to_run, "reasons": counts, "inputs": self.inputs}


def predict(store: "Store", text: str, source: str = "<spec>", *, executor: str | None = None) -> Prediction:
    """The datums the first spec of `text` would make now, and which of them a job would run."""
    spec = specs.load_spec(text, source)
    db = store.db
    name = spec.name
    row = pipeline_rows.get(db, name)
    kind = executor or spec.executor or store.config.get("executor", "local")
    code_dir = os.path.dirname(os.path.abspath(source)) if source not in ("<spec>", "-") else None
    code = code_mod.fingerprint(spec, code_dir, kind)

    pins, pinned = [], []
    for p in spec.pfs_inputs():
        branch = repo_rows.branch(db, p.repo, p.branch)
        if branch is None and not repo_rows.exists(db, p.repo):
            raise InvalidSpec(f"spec.input: input repo {p.repo!r} does not exist.", hint="Create it with `dpl create-repo` first.")
        commit = branch.head if branch else None
        pins.append({"name": p.name, "repo": p.repo, "branch": p.branch, "commit": commit})
        table = store.files.commit_table(store.get_commit(p.repo, commit)) if commit else index.EMPTY
        pinned.append(datums_mod.pin(p, commit, table))

    prev_job = _previous_job(store, name, spec.output_branch) if row is not None else None
    salt = _salt(spec, code, prev_job, pipeline_rows.last_reprocess(db, name) if row is not None else 0)
    dset = datums_mod.build(spec, pinned, salt)
    keys = dset.keys()
    hex_ids = [d.hex() for d in dset.ids]

    actions = np.full(len(dset), "run", dtype=object)
    why: dict[int, str] = {}
    prev_table = None
    if prev_job is not None and prev_job.datum_list:
        prev_table = index.read_table(store.chunks, bytes.fromhex(prev_job.datum_list))
        in_prev = pc.is_in(pa.array(dset.ids, pa.binary(16)), value_set=prev_table["datum"].combine_chunks()).to_numpy(zero_copy_only=False)
        actions[in_prev] = "skip"
    candidates = np.flatnonzero(actions == "run").tolist()
    if row is not None and candidates:
        cached = datum_rows.outputs_of(db, name, [hex_ids[i] for i in candidates])
        for i in candidates:
            if hex_ids[i] in cached:
                actions[i] = "skip"
                why[i] = f"{ALREADY_DONE} (by job {cached[hex_ids[i]].job[:12]})"
    to_run = np.flatnonzero(actions == "run").tolist()
    run = SimpleNamespace(  # what `reasons` reads of a JobRun; version -1: never the previous job's own
        jobs=SimpleNamespace(db=db), pipeline=name, spec=spec, code=code, job=SimpleNamespace(reason="predict", version=-1),
    )
    why.update(reasons_mod.reasons(run, dset, to_run, prev_table, prev_job, salt))
    datums = [{"datum": d, "key": k, "action": a, "reason": why.get(i, ALREADY_DONE if a == "skip" else "new input")}
              for i, (d, k, a) in enumerate(zip(hex_ids, keys, actions.tolist()))]
    return Prediction(name, row is not None, datums, pins)


def _previous_job(store: "Store", pipeline: str, output_branch: str) -> job_rows.Job | None:
    """The job that made the output branch's head, if it succeeded (as `JobRun._previous_output`)."""
    branch = repo_rows.branch(store.db, pipeline, output_branch)
    if branch is None or branch.head is None:
        return None
    commit = commit_rows.get(store.db, pipeline, branch.head)
    job = job_rows.get(store.db, pipeline, commit.job) if commit is not None and commit.job else None
    return job if job is not None and job.state == "success" else None


def _salt(spec: specs.Spec, code: dict, prev_job: job_rows.Job | None, reprocess: int) -> str:
    """`JobRun._salt` as the next job would compute it."""
    digest = ""
    if prev_job is not None and (prev_job.executor or {}).get("image") == spec.transform.get("image"):
        digest = (prev_job.executor or {}).get("image_digest", "")
    parts = [spec.transform_hash(), digest, str(reprocess)]
    if code:
        parts.append(code["hash"])
    if spec.reprocess_every_job:
        parts.append("predict")  # a fresh salt each job: every datum runs
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
