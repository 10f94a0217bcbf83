"""`fsck`: prove that every committed byte is still there and still right.

Re-hashes every object the store holds, reads every file index a commit
refers to, and follows every branch head and parent link.  Each problem is
reported with what it affects (repo, commit and file paths) because "chunk
3fa9... is bad" tells a user nothing about which data to restore.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..storage import chunkstore, index
from ..storage.chunkstore import object_id
from ..storage.errors import Corruption
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import repos as repo_rows

MAX_PATHS = 20  # affected paths named per problem


@dataclass
class Problem:
    # damaged-chunk, missing-chunk, bad-index, missing-index, bad-object, dangling-ref, dangling-provenance
    kind: str
    message: str
    affected: list[str] = field(default_factory=list)
    subject: str | None = None  # what `fsck --repair` works on: an object id, repo@branch or repo@commit

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "affected": self.affected, "subject": self.subject}


@dataclass
class Report:
    commits: int = 0
    indexes: int = 0
    chunks: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # harmless leftovers, e.g. a killed writer's temp files

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "commits": self.commits,
            "indexes": self.indexes,
            "chunks": self.chunks,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


def fsck(store, progress=None) -> Report:
    report = Report()
    commits = commit_rows.all_commits(store.db)
    known = {(c.repo, c.id) for c in commits}
    report.commits = len(commits)

    for b in repo_rows.all_branches(store.db):
        if b.head is not None and (b.repo, b.head) not in known:
            report.problems.append(
                Problem("dangling-ref", f"Branch {b.repo}@{b.name} points at commit {b.head}, which does not exist.",
                        subject=f"{b.repo}@{b.name}")
            )
    for c in commits:
        if c.parent and (c.repo, c.parent) not in known:
            report.problems.append(
                Problem("dangling-ref", f"Commit {c.repo}@{c.id} has parent {c.parent}, which does not exist.",
                        subject=f"{c.repo}@{c.id}")
            )
    report.problems += _provenance(store, commits, known)

    # Which commits use each index layer, and which chunks each layer uses.
    users: dict[bytes, list[str]] = {}
    layer_rows: dict[bytes, int] = {}
    for c in commits:
        for layer in c.layers + c.delta:
            users.setdefault(layer.id, []).append(f"{c.repo}@{c.id}")
            layer_rows[layer.id] = layer.rows
    chunk_layers: dict[bytes, list[bytes]] = {}
    tables: dict[bytes, pa.Table] = {}
    # Job objects: datum output batches (rows with chunk refs, carried into later
    # output commits) and datum lists (what the next job compares with).
    others: dict[bytes, str] = {}
    for use in datum_rows.batch_uses(store.db):
        oid = bytes.fromhex(use.batch)
        users.setdefault(oid, []).append(f"datum outputs of {use.pipeline}@{use.job}")
        others[oid] = "datum output batch"
    for job in job_rows.with_datum_list(store.db):
        oid = bytes.fromhex(job.datum_list)
        users.setdefault(oid, []).append(f"job {job.pipeline}@{job.id}")
        others.setdefault(oid, "datum list")
    for lid, rows in list(layer_rows.items()) + [(oid, None) for oid in others if oid not in layer_rows]:
        try:
            if rows is None:
                table = index.read_table(store.chunks, lid)
            else:
                table = index.read_layer(store.chunks, index.Layer(lid, rows))
        except Corruption as e:
            if rows is None:
                kind, what = "bad-object", f"The {others[lid]} {lid.hex()}"
            else:
                kind, what = "bad-index", f"File index {lid.hex()}"
            if not store.chunks.has(lid):
                kind, message = kind.replace("bad-", "missing-"), f"{what} is missing."
            else:
                message = f"{what} cannot be read: {e.message}"
            report.problems.append(Problem(kind, message, sorted(set(users[lid]))[:MAX_PATHS], subject=lid.hex()))
            continue
        if "refs" not in table.column_names:
            continue  # a datum list refers to no chunk
        report.indexes += 1
        tables[lid] = table
        flat = pc.list_flatten(table["refs"])
        for chunk in pc.unique(pc.struct_field(flat, "chunk")).to_pylist() if len(flat) else []:
            chunk_layers.setdefault(chunk, []).append(lid)

    stored = set()
    for oid, data in chunkstore.scan(store.chunks):  # the backend's bytes, never a cache's copy
        stored.add(oid)
        if data is None:
            continue
        report.chunks += 1
        if progress:
            progress(report.chunks)
        if object_id(data) != oid:
            if oid in layer_rows or oid in others:
                if oid in tables or (oid in others and not any(p.subject == oid.hex() for p in report.problems)):
                    # read fine (through a cache, or a damaged byte Arrow does not notice), but the stored copy is damaged
                    kind, what = ("bad-index", "File index") if oid in layer_rows else ("bad-object", f"The {others[oid]}")
                    report.problems.append(
                        Problem(kind, f"{what} {oid.hex()} is damaged: its bytes no longer match its hash.",
                                sorted(set(users[oid]))[:MAX_PATHS], subject=oid.hex())
                    )
                continue  # otherwise it was reported above, when it failed to read
            if oid not in chunk_layers:
                report.notes.append(f"Object {oid.hex()} is damaged, but nothing refers to it (`dpl gc` removes it).")
                continue
            report.problems.append(
                Problem("damaged-chunk", f"Chunk {oid.hex()} is damaged: its bytes no longer match its hash.",
                        _affected(oid, chunk_layers, tables, users), subject=oid.hex())
            )
    for chunk in chunk_layers:
        if chunk not in stored:
            report.problems.append(
                Problem("missing-chunk", f"Chunk {chunk.hex()} is missing.", _affected(chunk, chunk_layers, tables, users), subject=chunk.hex())
            )
    report.notes += _leftovers(store)
    return report


def _provenance(store, commits, known) -> list[Problem]:
    """Jobs and output commits must name commits and jobs that exist."""
    problems = []
    jobs = {(j.pipeline, j.id): j for j in job_rows.all_jobs(store.db)}
    for (pipeline, jid), j in sorted(jobs.items()):
        for inp in j.inputs:
            if inp.get("commit") and (inp["repo"], inp["commit"]) not in known:
                problems.append(Problem(
                    "dangling-provenance",
                    f"Job {pipeline}@{jid} read {inp['repo']}@{inp['commit']}, which no longer exists.",
                    [f"{pipeline}@{j.output_commit}"] if j.output_commit else [], subject=f"{pipeline}@{jid}",
                ))
        if j.output_commit and (pipeline, j.output_commit) not in known:
            problems.append(Problem(
                "dangling-provenance", f"Job {pipeline}@{jid} made commit {pipeline}@{j.output_commit}, which no longer exists.",
                subject=f"{pipeline}@{jid}",
            ))
    for c in commits:
        if c.origin == "auto" and c.job and (c.repo, c.job) not in jobs:
            problems.append(Problem(
                "dangling-provenance", f"Commit {c.repo}@{c.id} was made by job {c.repo}@{c.job}, which no longer exists.",
                subject=f"{c.repo}@{c.id}",
            ))
    return problems


def _leftovers(store) -> list[str]:
    """Files a killed process left behind: harmless, and removed by `dpl gc`."""
    from .writers import pid_alive

    notes = []
    for directory, what in ((store.chunks.tmp, "temporary object file"), (store.chunks.trash, "object an interrupted gc moved aside")):
        if not directory or not os.path.isdir(directory):
            continue
        stray = [n for n in os.listdir(directory) if not (n.count(".") >= 1 and pid_alive(n.split(".")[1]))]
        if stray:
            notes.append(f"{len(stray)} {what}(s) left by a killed process in {directory} (`dpl gc` removes them).")
    return notes


def _affected(chunk: bytes, chunk_layers, tables, users) -> list[str]:
    """`repo@commit:path` of every file whose bytes live in `chunk`."""
    out: list[str] = []
    for lid in chunk_layers.get(chunk, []):
        table = tables[lid]
        flat = pc.list_flatten(table["refs"])
        owners = pc.list_parent_indices(table["refs"])
        hit = pc.equal(pc.struct_field(flat, "chunk"), pa.scalar(chunk, pa.binary(16)))
        rows = pc.unique(pc.filter(owners, hit)).to_pylist()
        paths = table.take(rows)["path"].to_pylist()
        for commit in sorted(set(users[lid])):
            out.extend(f"{commit}:{p}" for p in paths)
            if len(out) >= MAX_PATHS:
                return out[:MAX_PATHS]
    return out
