"""Datums: how a pipeline's input tree cuts pinned input commits into units of work.

Each pfs input is cut by its glob (see `globs`); the combinators then build
datums as tuples of (input, unit) pairs, with Pachyderm's semantics:

- cross: every combination of one datum from each child;
- union: the datums of each child, one after the other (children may share
  a name: a datum holds one of them);
- join: per `join_on` key, every combination of one (input, unit) from each
  child; where some child lacks the key, a combination keeps only its
  `outer_join` inputs (Pachyderm's processMergeTask);
- group: one datum per `group_by` key, holding every (input, unit) of every
  child with that key.

Join and group take any input as a child (a cross, a join: "GroupJoin"):
as Pachyderm's key task does, the child's datums are taken apart and each
input in them is keyed by its own pfs input's `join_on` / `group_by`,
filled from its glob's captures by ohmyglob's rules (`$0` is the matched
path; an omitted template is the empty key, so it joins or groups with
every other empty key).

A datum's id is the xxh3-128 of the job's salt (the transform hash, image
digest and reprocess counter) and, for each unit in it, the digest of its
(input name, path, content hash) rows, and of its matched path when it is
a directory matched by a glob whose matches can nest (`/**`).  Equal ids mean equal work, which is what
lets a job skip a datum and carry its output forward; a datum met twice
(Pachyderm keys datums by id) is kept once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pyarrow as pa
import xxhash

from . import ohmyglob
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
    lazy: bool = False


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
    _keys: dict = field(default_factory=dict, repr=False)  # template -> every unit's filled key

    @property
    def name(self) -> str:
        return self.spec.name

    def join_key(self, unit: int) -> str:
        """The unit's `join_on` filled from its glob's captures ("" when join_on is omitted)."""
        return self.keys_for(self.spec.join_on)[unit]

    def group_key(self, unit: int) -> str:
        return self.keys_for(self.spec.group_by)[unit]

    def keys_for(self, template: str | None) -> list[str]:
        """Every unit's key for a template, computed once."""
        found = self._keys.get(template)
        if found is None:
            if not template:
                found = [""] * len(self.matches)
            else:
                apply = ohmyglob.filler(template)
                # Pachyderm matches the path with its trailing `/` trimmed: the root
                # is "", which `/` does not match, so every reference in it is empty.
                found = [apply([k, *c] if k != "/" else []) for k, c in zip(self.matches.keys, self.matches.captures)]
            self._keys[template] = found
        return found


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
        if len(self.inputs) == 1 and all(len(t) == 1 for t in self.tuples):
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
                DatumInput(pin.name, pin.spec.repo, pin.commit or "", path, pin.matches.unit(u).to_pylist(), pin.spec.empty_files, pin.spec.lazy)
            )
            # As Pachyderm's worker sets them (driver.UserCodeEnv); where a group holds
            # several units of one input, the last one's win, as in Go's exec.
            env[pin.name] = f"/pfs/{pin.name}{'' if path == '/' else path}"
            env[f"{pin.name}_COMMIT"] = pin.commit or ""
            for what, key in (("JOIN_ON", pin.join_key(u)), ("GROUP_BY", pin.group_key(u))):
                if key:
                    env[f"PACH_DATUM_{pin.name}_{what}"] = key
        datum = self.ids[i].hex()
        env.update({"PACH_JOB_ID": job, "PACH_DATUM_ID": datum, "PPS_PIPELINE_NAME": pipeline, "PACH_OUTPUT_COMMIT_ID": job})
        return DatumTask(job, pipeline, datum, inputs, env)


def pin(spec: PfsInput, commit: str | None, table: pa.Table) -> PinnedInput:
    """Cut one input's files (at `commit`) into units and digest each unit."""
    glob = compile_glob(spec.glob)
    matches = match(table, glob)
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
    if glob.depth is None:
        # Matches of varying depth nest (`/**` matches /d/y and /d/y/z, which may
        # hold the same one file): a directory's matched path tells them apart, as
        # Pachyderm's DatumID does.  A file matched as itself, and every match of
        # a fixed-depth glob (they never share a file), keep the id they had.
        paths, s = files["path"].to_pylist(), matches.starts.tolist()
        digests = [
            d if s[i + 1] - s[i] == 1 and paths[s[i]] == k else xxhash.xxh3_128_digest(b"\1" + prefix + k.encode() + b"\0" + d)
            for i, (k, d) in enumerate(zip(matches.keys, digests))
        ]
    return PinnedInput(spec, commit, matches, digests)


def build(spec: Spec, pinned: list[PinnedInput], salt: str) -> DatumSet:
    """Every datum of the input tree, each once (Pachyderm keeps one datum per DatumID)."""
    tuples = _expand(spec.input, pinned, itertools.count())
    seed = salt.encode()
    if len(pinned) == 1 and all(len(t) == 1 for t in tuples):  # one pfs input, one unit a datum: the common case
        digests = pinned[0].digests
        ids = [xxhash.xxh3_128_digest(seed + digests[u]) for ((_, u),) in tuples]
    else:
        ids = [xxhash.xxh3_128_digest(seed + b"".join(pinned[p].digests[u] for p, u in t)) for t in tuples]
    if len(set(ids)) < len(ids):  # a union whose children share a name and files, a join's outer-only rows
        seen: set[bytes] = set()
        keep = [i for i, d in enumerate(ids) if not (d in seen or seen.add(d))]
        tuples, ids = [tuples[i] for i in keep], [ids[i] for i in keep]
    return DatumSet(pinned, tuples, ids)


def _expand(node: dict, pinned: list[PinnedInput], counter) -> list[tuple[Pair, ...]]:
    """The datums of one input node; pfs inputs are numbered in tree order, as `Spec.pfs_inputs` lists them."""
    (kind, value), = node.items()
    if kind == "pfs":
        i = next(counter)
        return [((i, u),) for u in range(len(pinned[i].matches))]
    parts = [_expand(child, pinned, counter) for child in value]
    if kind == "cross":
        return [tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts)]
    if kind == "union":
        return [t for part in parts for t in part]
    if kind == "join":
        return _join(parts, pinned)
    return _group(parts, pinned)


def _keyed(parts: list[list[tuple[Pair, ...]]], pinned: list[PinnedInput], which: str) -> dict[str, list[dict[Pair, None]]]:
    """Each input of each child datum under its own key, as Pachyderm's key task files them.

    A child may be any input (a cross, a join): its datums are taken apart
    and every (input, unit) in them is keyed by that pfs input's own
    `join_on` / `group_by` (`which`), once per key and child, in the order met.
    """
    keys = [p.keys_for(p.spec.join_on if which == "join" else p.spec.group_by) for p in pinned]
    by_key: dict[str, list[dict[Pair, None]]] = {}
    for slot, datums in enumerate(parts):
        for t in datums:
            for pair in t:
                key = keys[pair[0]][pair[1]]
                slots = by_key.get(key)
                if slots is None:
                    slots = by_key[key] = [{} for _ in parts]
                slots[slot][pair] = None
    return by_key


def _join(parts, pinned: list[PinnedInput]) -> list[tuple[Pair, ...]]:
    """Pachyderm's processMergeTask (JOIN): per key, the cross of every child's inputs;
    where some child lacks the key, each combination keeps only its `outer_join`
    inputs (and none at all when none of them is outer)."""
    out = []
    for key, slots in sorted(_keyed(parts, pinned, "join").items()):
        present = [s for s in slots if s]
        if len(present) == len(slots):
            out.extend(itertools.product(*present))  # one (input, unit) from each child
            continue
        # A combination's non-outer members drop out, so per child the choices are
        # its outer members, plus "none" if it also has members that are not outer.
        choices = []
        for members in present:
            outer = [p for p in members if pinned[p[0]].spec.outer_join]
            choices.append(outer + ([None] if len(outer) < len(members) else []))
        for combo in itertools.product(*choices):
            kept = tuple(p for p in combo if p is not None)
            if kept:
                out.append(kept)
    return out


def _group(parts, pinned: list[PinnedInput]) -> list[tuple[Pair, ...]]:
    """Pachyderm's processMergeTask (GROUP): one datum per `group_by` key, holding
    every input of every child with that key, children in order."""
    return [
        tuple(itertools.chain.from_iterable(slots))
        for _, slots in sorted(_keyed(parts, pinned, "group").items())
    ]
