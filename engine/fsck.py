"""`fsck`: prove that every committed byte is still there and still right.

Re-hashes every object the store holds, reads every file index a commit
refers to, and follows every branch head and parent link.  Each problem is
reported with what it affects (repo, commit and file paths) because "chunk
3fa9... is bad" tells a user nothing about which data to restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from dpl.storage import chunkstore, index
from dpl.storage.chunkstore import object_id
from dpl.storage.errors import Corruption

MAX_PATHS = 20  # affected paths named per problem


@dataclass
class Problem:
    kind: str  # damaged-chunk, missing-chunk, bad-index, dangling-ref
    message: str
    affected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "affected": self.affected}


@dataclass
class Report:
    commits: int = 0
    indexes: int = 0
    chunks: int = 0
    problems: list[Problem] = field(default_factory=list)

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
        }


def fsck(store, progress=None) -> Report:
    report = Report()
    commits = store.db.query("SELECT repo, id, parent, state, layers, delta FROM commits")
    known = {(c["repo"], c["id"]) for c in commits}
    report.commits = len(commits)

    for b in store.db.query("SELECT repo, name, head FROM branches WHERE head IS NOT NULL"):
        if (b["repo"], b["head"]) not in known:
            report.problems.append(
                Problem("dangling-ref", f"Branch {b['repo']}@{b['name']} points at commit {b['head']}, which does not exist.")
            )
    for c in commits:
        if c["parent"] and (c["repo"], c["parent"]) not in known:
            report.problems.append(
                Problem("dangling-ref", f"Commit {c['repo']}@{c['id']} has parent {c['parent']}, which does not exist.")
            )

    # Which commits use each index layer, and which chunks each layer uses.
    users: dict[bytes, list[str]] = {}
    layer_rows: dict[bytes, int] = {}
    for c in commits:
        for d in json.loads(c["layers"]) + json.loads(c["delta"]):
            lid = bytes.fromhex(d["id"])
            users.setdefault(lid, []).append(f"{c['repo']}@{c['id']}")
            layer_rows[lid] = int(d["rows"])
    chunk_layers: dict[bytes, list[bytes]] = {}
    tables: dict[bytes, pa.Table] = {}
    for lid, rows in layer_rows.items():
        try:
            table = index.read_layer(store.chunks, index.Layer(lid, rows))
        except Corruption as e:
            report.problems.append(
                Problem("bad-index", f"File index {lid.hex()} cannot be read: {e.message}", sorted(set(users[lid]))[:MAX_PATHS])
            )
            continue
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
            if oid in layer_rows:
                if oid in tables:  # read fine through a cache, but the stored copy is damaged
                    report.problems.append(
                        Problem("bad-index", f"File index {oid.hex()} is damaged: its bytes no longer match its hash.", sorted(set(users[oid]))[:MAX_PATHS])
                    )
                continue  # otherwise it was reported above, when it failed to read
            report.problems.append(
                Problem("damaged-chunk", f"Chunk {oid.hex()} is damaged: its bytes no longer match its hash.", _affected(oid, chunk_layers, tables, users))
            )
    for chunk in chunk_layers:
        if chunk not in stored:
            report.problems.append(
                Problem("missing-chunk", f"Chunk {chunk.hex()} is missing.", _affected(chunk, chunk_layers, tables, users))
            )
    return report


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
