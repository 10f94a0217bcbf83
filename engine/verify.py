"""`dpl verify REPO@COMMIT`: would the datums that made an output commit give the same bytes again?

The job that made the commit is rebuilt (`replay`: its pinned inputs, its
salt, its spec version), and each of its datums (or a random `sample` of
them) runs again on the executor the job used, through the executor's own
`run_datum`, in a scratch directory.  Only the collection differs: instead
of storing `/pfs/out` as chunks (`runner.collect_outputs`), `ctx.collect`
hashes each file (xxh3-128, as the index does) and keeps small ones, so a
verification adds nothing to the chunk store.  Each datum is reproducible
when its files and their hashes equal the commit's rows of that datum;
otherwise the report names each differing file, with a unified diff where
both versions are text.  The result is recorded with the commit
(`storage/metadata/verifications.py`).
"""

from __future__ import annotations

import difflib
import json
import os
import random
import time
from typing import TYPE_CHECKING, Callable

import pyarrow.compute as pc
import xxhash

from . import replay as replay_mod
from .errors import ExecutorUnavailable
from .executors import get_executor
from .executors.runner import UnreadableOutput
from .workspace import _Outputs  # the walk collect() does: links followed, /pfs links mapped
from ..storage.errors import DplError
from ..storage.metadata import verifications as verification_rows

if TYPE_CHECKING:
    from .store import Store

KEEP_BYTES = 1 << 20  # a re-run file up to this size is kept for a text diff
DIFF_LINES = 40  # of each file's diff


def verify(store: "Store", repo: str, ref: str, *, sample: int | None = None, executor: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> verification_rows.Verification:
    """Re-run the datums that made `repo@ref`, compare their outputs, record and return the verdict."""
    commit = store.resolve_commit(repo, ref)
    if not commit.job:
        raise DplError(f"Commit {repo}@{commit.id[:12]} was not made by a pipeline job, so there is nothing to re-run.",
                       hint="Verify a pipeline's output commit: dpl verify PIPELINE@master.")
    r = replay_mod.replay(store, repo, commit.job)
    kind = replay_mod.executor_kind(store, r, executor)
    if kind not in ("local", "docker"):
        raise ExecutorUnavailable(f"dpl verify re-runs datums on the local and docker executors, not {kind!r}.",
                                  hint="Pass --executor local.")
    table = store.files.commit_table(commit)
    chosen = list(range(len(r.dset)))
    if sample is not None and sample < len(chosen):
        chosen = sorted(random.sample(chosen, max(0, sample)))
    ctx = r.context(store, "verify")
    ctx.collect = _hash_outputs
    runner = get_executor(kind, store.config)
    report = []
    try:
        info = runner.start(ctx)
        was = (r.job.executor or {}).get("image_digest")
        for n, i in enumerate(chosen):
            task = r.task(i)
            result = runner.run_datum(ctx, task)
            mine = table.filter(pc.equal(table["datum"], r.dset.ids[i]))
            before = dict(zip(mine["path"].to_pylist(), (h.hex() for h in mine["hash"].to_pylist())))
            entry = {"datum": task.datum, "key": r.dset.key(i), "reproducible": False, "error": None, "files": []}
            if not result.ok:
                entry["error"] = result.error or f"exited with code {result.exit_code}"
            else:
                entry["files"] = _differences(store, commit, before, result.outputs)
                entry["reproducible"] = not entry["files"]
            if was and info.get("image_digest") != was:
                entry["note"] = f"the image is now {info.get('image_digest', '?')[:19]}, the job ran {was[:19]}"
            report.append(entry)
            if progress:
                progress(n + 1, len(chosen))
    finally:
        runner.stop(ctx)
        replay_mod.done(ctx)
    v = verification_rows.Verification(
        repo=repo, commit=commit.id, verified=time.time(), executor=kind, checked=len(report),
        reproducible=sum(1 for e in report if e["reproducible"]), total=len(r.dset),
        sample=sample, report_json=json.dumps(report),
    )
    with store.db.write() as tx:
        verification_rows.record(tx, v)
    return v


def verification(store: "Store", repo: str, commit_id: str) -> dict | None:
    """The commit's latest verification, as `inspect-commit` and `provenance` show it; None if never verified."""
    v = verification_rows.get(store.db, repo, commit_id)
    return None if v is None else as_dict(v)


def as_dict(v: verification_rows.Verification) -> dict:
    return {"repo": v.repo, "commit": v.commit, "verified": v.verified, "executor": v.executor, "total": v.total,
            "sample": v.sample, "checked": v.checked, "reproducible": v.reproducible, "ok": v.ok, "datums": v.report}


def summary(v: verification_rows.Verification | dict) -> str:
    """One line: `reproducible (3 of 3 datums re-run)` or `NOT reproducible: 1 of 3 datums differ`."""
    d = as_dict(v) if isinstance(v, verification_rows.Verification) else v
    of = f"{d['checked']} of {d['total']} datums re-run" if d["checked"] < d["total"] else f"all {d['total']} datums re-run"
    if d["ok"]:
        return f"reproducible ({of})"
    return f"NOT reproducible: {d['checked'] - d['reproducible']} datum(s) differ ({of})"


# ------------------------------------------------------------------ comparing


def _hash_outputs(ctx, task, box) -> dict[str, tuple[str, bytes | None]]:
    """`ctx.collect` for a verification: each output file's hash (and bytes, if small), nothing stored."""
    pfs_map = {f"/pfs/{i.name}": str(box.pfs / i.name) for i in task.inputs}
    pfs_map["/pfs/out"] = str(box.out)
    walker = _Outputs(pfs_map, task.inputs)
    try:
        walker.directory(str(box.out), "", frozenset([os.path.realpath(box.out)]), "/pfs/out")
    except DplError as e:
        raise UnreadableOutput(e.message) from None
    out = {}
    for path, local in walker.local:
        h = xxhash.xxh3_128()
        kept = bytearray()
        with open(local, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                h.update(block)
                if len(kept) <= KEEP_BYTES:
                    kept += block
        out[path] = (h.hexdigest(), bytes(kept) if len(kept) <= KEEP_BYTES else None)
    for path, row in walker.stored:
        out[path] = (bytes(row["hash"]).hex(), None)
    return out


def _differences(store: "Store", commit, before: dict[str, str], after: dict[str, tuple[str, bytes | None]]) -> list[dict]:
    files = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old is None:
            files.append({"path": path, "change": "new file (not in the commit)", "diff": None})
        elif new is None:
            files.append({"path": path, "change": "not written again", "diff": None})
        elif old != new[0]:
            files.append({"path": path, "change": "different content", "diff": _text_diff(store, commit, path, new[1])})
    return files


def _text_diff(store: "Store", commit, path: str, new: bytes | None) -> str | None:
    """A unified diff of the committed file and the re-run's, when both are small text."""
    if new is None:
        return None
    row = store.file_row(commit.repo, commit.id, path)
    if row["size"] > KEEP_BYTES:
        return None
    old = store.read_file(commit.repo, commit.id, path)
    texts = []
    for data in (old, new):
        if b"\0" in data:
            return None
        try:
            texts.append(data.decode("utf-8").splitlines(keepends=True))
        except UnicodeDecodeError:
            return None
    lines = list(difflib.unified_diff(texts[0], texts[1], f"committed{path}", f"re-run{path}"))
    if len(lines) > DIFF_LINES:
        lines = lines[:DIFF_LINES] + [f"... {len(lines) - DIFF_LINES} more lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
