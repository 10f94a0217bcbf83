"""Hyperparameter sweeps: a params repo with one JSON file per combination.

A sweep is data, not a new kind of job: `create_sweep` writes the grid of
`--param name=v1,v2` values into a repo, one file per combination, and a
pipeline that crosses that repo (glob `/*`) with its data trains one model per
combination.  Because a datum's id hashes its files' content, a combination's
file must be byte-identical from one sweep to the next: its name lists the
values in a fixed key order and its JSON is written with sorted keys, so
adding a value adds files, leaves the others untouched, and the next job runs
only the new datums (Katib and DVC experiments rerun the whole grid).
"""

from __future__ import annotations

import itertools
import json
import re

from ..storage.errors import DplError, RepoNotFound

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# A combination's file name, e.g. `depth=2,criterion=gini.json`; metrics.py
# recognises params files by it.
FILE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=[^,/]*(,[A-Za-z_][A-Za-z0-9_.-]*=[^,/]*)*\.json$")


class InvalidSweep(DplError):
    """A --param that cannot be read as NAME=V1,V2,... (kept beside the sweep code it belongs to)."""


def parse_params(specs: list[str]) -> dict[str, list]:
    """`["depth=2,4", "criterion=gini"]` -> {"depth": [2, 4], "criterion": ["gini"]}, in the order given.

    Values are JSON where they parse as JSON (2 -> int, 0.1 -> float, true ->
    bool), so a step reads numbers as numbers; anything else is a string.
    """
    if not specs:
        raise InvalidSweep("A sweep needs at least one --param.", hint="Write e.g. --param depth=2,4,8 --param criterion=gini,entropy.")
    grid: dict[str, list] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        name = name.strip()
        if not eq or not PARAM_NAME.match(name):
            raise InvalidSweep(f"--param {spec!r} is not NAME=VALUE[,VALUE...].", hint="Write e.g. --param depth=2,4,8.")
        if name in grid:
            raise InvalidSweep(f"--param {name} is given twice.", hint=f"List every value once: --param {name}=A,B,C.")
        parsed = [_value(v.strip()) for v in values.split(",") if v.strip()]
        if not parsed:
            raise InvalidSweep(f"--param {name} has no values.", hint=f"Write e.g. --param {name}=1,2.")
        if any("/" in _text(v) for v in parsed):
            raise InvalidSweep(f"--param {name} has a value with '/', which cannot be part of a file name.", hint="Name the values without slashes.")
        grid[name] = list(dict.fromkeys(parsed))  # a repeated value is one combination, not two files
    return grid


def _value(text: str):
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def _text(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def combinations(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, the first parameter varying slowest."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def file_name(combo: dict) -> str:
    """`{"depth": 2, "criterion": "gini"}` -> `depth=2,criterion=gini.json` (keys in the combination's order)."""
    return ",".join(f"{k}={_text(v)}" for k, v in combo.items()) + ".json"


def file_bytes(combo: dict) -> bytes:
    return (json.dumps(combo, indent=2, sort_keys=True) + "\n").encode()


def params_of_name(name: str) -> list[str] | None:
    """The parameter names a sweep file name lists, in its order; None when it is not a sweep file."""
    base = name.rsplit("/", 1)[-1]
    if not FILE_NAME.match(base):
        return None
    return [part.partition("=")[0] for part in base[: -len(".json")].split(",")]


def create_sweep(store, repo: str, params: list[str], *, branch: str = "master", keep: bool = False,
                 description: str = "") -> dict:
    """Write the grid of `params` into `repo@branch` as one commit (creating the repo if missing).

    The branch then holds exactly the grid: the files of combinations no
    longer in it are deleted in the same commit (so are the models made from
    them), unless `keep`.  Files that are not sweep files are left alone.
    `store` is a Store or a remote client: only their public methods are used.
    """
    grid = parse_params(params)
    try:
        store.inspect_repo(repo)
        existing = [f["path"] for f in rows(store.list_files(repo, branch, "/")) if f["type"] == "file"] \
            if any(b["branch"] == branch and b["head"] for b in store.list_branches(repo)) else []
    except RepoNotFound:
        store.create_repo(repo, f"sweep params: {', '.join(grid)}")
        existing = []
    grid = _in_existing_order(grid, existing)
    files = {"/" + file_name(c): file_bytes(c) for c in combinations(grid)}
    stale = [p for p in existing if params_of_name(p) is not None and p not in files]
    if keep:
        files.update({p: None for p in stale})  # marker: kept as they are
    new = sorted(p for p in files if p not in existing)
    written = {p: b for p, b in files.items() if b is not None}
    if not keep and stale:
        # one commit: every file that should stay plus every non-sweep file, nothing else
        others = {p: store.read_file(repo, branch, p) for p in existing if params_of_name(p) is None}
        commit = store.put_bytes(repo, branch, {**others, **written}, replace=True, description=description or _message(grid))
    else:
        commit = store.put_bytes(repo, branch, written, description=description or _message(grid))
    return {"repo": repo, "branch": branch, "commit": commit.id, "params": grid,
            "combinations": len(written) + (len(stale) if keep else 0), "added": new,
            "removed": [] if keep else sorted(stale)}


def _in_existing_order(grid: dict[str, list], existing: list[str]) -> dict[str, list]:
    """The grid with its keys in the order the repo's sweep files already use, so that a
    sweep given its --params in another order names (and so reruns) nothing anew."""
    for path in existing:
        order = params_of_name(path)
        if order is not None and sorted(order) == sorted(grid):
            return {k: grid[k] for k in order}
    return grid


def rows(listing) -> list[dict]:
    """A listing as a list of dicts: the embedded Store gives Arrow tables, a remote one lists when short."""
    return listing.to_pylist() if hasattr(listing, "to_pylist") else list(listing)


def _message(grid: dict[str, list]) -> str:
    return "sweep " + " ".join(f"{k}={','.join(_text(v) for v in vs)}" for k, vs in grid.items())
