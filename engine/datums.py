"""Datums: how a pipeline's input tree cuts pinned input commits into units of work.

Each pfs input is cut by its glob (see `globs`); the combinators then build
datums as tuples of (input, unit) pairs, with Pachyderm's semantics:

- cross: every combination of one datum from each child;
- union: the datums of each child, one after the other;
- join: units of pfs children whose `join_on` keys are equal, crossed; a key
  missing from some children still makes a datum if a child holding it has
  `outer_join`;
- group: one datum per `group_by` key, holding every unit of every child
  with that key.

A datum's id is the xxh3-128 of the job's salt (the transform hash, image
digest and reprocess counter) and, for each unit in it, the digest of its
(input name, path, content hash) rows.  Equal ids mean equal work, which is
what lets a job skip a datum and carry its output forward.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pyarrow as pa
import xxhash

from .globs import Matches, compile_glob, match
from .spec import PfsInput, Spec

Pair = tuple[int, int]  # (pfs input index, unit index)


@dataclass
class DatumInput:
    """One input's part of a datum: what a step sees at `/pfs/<name>`."""

    name: str  # the input's name: files appear under /pfs/<name>
    repo: str
    commit: str
    match: str  # the glob match this datum holds (a file or directory path)
    files: list[dict]  # index rows: path, size, hash, refs
    empty_files: bool = False


@dataclass
class DatumTask:
    """One datum as an executor runs it: its input files and its environment."""

    job: str
    pipeline: str
    datum: str
    inputs: list[DatumInput]
    env: dict[str, str]  # PACH_* variables and one path variable per input


@dataclass
class PinnedInput:
    """One pfs input of a job, resolved at a commit and cut into units."""

    spec: PfsInput
    commit: str | None
    matches: Matches
    digests: list[bytes]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class DatumSet:
    inputs: list[PinnedInput]
    tuples: list[tuple[Pair, ...]]
    ids: list[bytes]  # 16-byte ids, parallel to `tuples`

    def __len__(self) -> int:
        return len(self.tuples)

    def key(self, i: int) -> str:
        """A human-readable name: `input:/path` of every unit in the datum."""
        return " ".join(f"{self.inputs[p].name}:{self.inputs[p].matches.keys[u]}" for p, u in self.tuples[i])

    def keys(self) -> list[str]:
        """Every datum's key; a single pfs input (the common case) costs one pass."""
        if len(self.inputs) == 1:
            name = self.inputs[0].name + ":"
            unit_keys = self.inputs[0].matches.keys
            return [name + unit_keys[u] for ((_, u),) in self.tuples]
        return [self.key(i) for i in range(len(self.tuples))]

    def task(self, i: int, job: str, pipeline: str) -> DatumTask:
        inputs, env = [], {}
        for p, u in self.tuples[i]:
            pin = self.inputs[p]
            path = pin.matches.keys[u]
            inputs.append(
                DatumInput(pin.name, pin.spec.repo, pin.commit or "", path, pin.matches.unit(u).to_pylist(), pin.spec.empty_files)
            )
            env.setdefault(pin.name, f"/pfs/{pin.name}{'' if path == '/' else path}")
        datum = self.ids[i].hex()
        env.update({"PACH_JOB_ID": job, "PACH_DATUM_ID": datum, "PPS_PIPELINE_NAME": pipeline, "PACH_OUTPUT_COMMIT_ID": job})
        return DatumTask(job, pipeline, datum, inputs, env)


def pin(spec: PfsInput, commit: str | None, table: pa.Table) -> PinnedInput:
    """Cut one input's files (at `commit`) into units and digest each unit."""
    matches = match(table, compile_glob(spec.glob))
    files = matches.files
    prefix = spec.name.encode() + b"\0"
    rows = [
        xxhash.xxh3_128_digest(prefix + p.encode() + b"\0" + h)
        for p, h in zip(files["path"].to_pylist(), files["hash"].to_pylist())
    ]
    if len(rows) == len(matches):
        digests = rows  # one file per unit, the common case
    else:
        s = matches.starts.tolist()
        digests = [rows[a] if b - a == 1 else xxhash.xxh3_128_digest(b"".join(rows[a:b])) for a, b in zip(s[:-1], s[1:])]
    return PinnedInput(spec, commit, matches, digests)


def build(spec: Spec, pinned: list[PinnedInput], salt: str) -> DatumSet:
    order = {p.spec.name: i for i, p in enumerate(pinned)}
    tuples = _expand(spec.input, pinned, order)
    seed = salt.encode()
    if len(pinned) == 1:
        digests = pinned[0].digests
        ids = [xxhash.xxh3_128_digest(seed + digests[u]) for ((_, u),) in tuples]
    else:
        ids = [xxhash.xxh3_128_digest(seed + b"".join(pinned[p].digests[u] for p, u in t)) for t in tuples]
    return DatumSet(pinned, tuples, ids)


def _expand(node: dict, pinned: list[PinnedInput], order: dict[str, int]) -> list[tuple[Pair, ...]]:
    (kind, value), = node.items()
    if kind == "pfs":
        i = order[value.get("name") or value["repo"]]
        return [((i, u),) for u in range(len(pinned[i].matches))]
    if kind == "cross":
        parts = [_expand(child, pinned, order) for child in value]
        return [tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts)]
    if kind == "union":
        return [t for child in value for t in _expand(child, pinned, order)]
    children = [order[c["pfs"].get("name") or c["pfs"]["repo"]] for c in value]
    template_key = "join_on" if kind == "join" else "group_by"
    by_key: dict[str, list[list[int]]] = {}
    for slot, (i, child) in enumerate(zip(children, value)):
        template = child["pfs"][template_key]
        for u, groups in enumerate(pinned[i].matches.captures):
            key = _fill(template, groups)
            by_key.setdefault(key, [[] for _ in children])[slot].append(u)
    out = []
    for key in sorted(by_key):
        units = by_key[key]
        if kind == "group":
            out.append(tuple((children[s], u) for s, us in enumerate(units) for u in us))
            continue
        present = [s for s, us in enumerate(units) if us]
        if len(present) < len(children) and not any(value[s]["pfs"].get("outer_join") for s in present):
            continue
        lists = [[(children[s], u) for u in units[s]] for s in present]
        out.extend(tuple(combo) for combo in itertools.product(*lists))
    return out


def _fill(template: str, groups: tuple[str, ...]) -> str:
    return re.sub(r"\$(\d+)", lambda m: groups[int(m.group(1)) - 1] if 0 < int(m.group(1)) <= len(groups) else "", template)
