"""Metrics: the metrics files datums write, read back by params combination, commit or file.

A step writes its scores to a file (`metrics.json`, `metrics.csv`, ...) beside
its model.  `collect` reads every such file of an output commit, and asks the
Provenance component which datum wrote it and which files that datum read:
when one of them is a sweep params file (engine/sweeps.py names them
`depth=2,criterion=gini.json`), the row is that combination's.  So comparing
a sweep needs no naming convention in the step's output paths and no tracker
the step must call; what dpl recorded is the join.

Everything goes through the Store's public methods (`list_files`,
`read_file`, `file_provenance`, ...), so a remote client works as well as the
embedded store.  The PNG chart needs matplotlib (the `experiments` extra),
imported only when one is drawn.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json

from .sweeps import params_of_name, rows as listing_rows
from ..storage.errors import DplError

DEFAULT_PATTERNS = ("metrics*.json", "metrics*.csv")


class MetricsError(DplError):
    """No metrics files, an unreadable one, or a metric no file has (kept beside the code that reads them)."""


# ------------------------------------------------------------------ reading


def parse_metrics(path: str, data: bytes) -> dict[str, float]:
    """The numeric metrics of one file.

    JSON: an object (nested objects give dotted names), or a list of objects
    (a per-epoch log: the last one counts).  CSV with a header: the last row's
    numeric columns, or `name,value` rows when the file has two columns and
    the first is not numeric.  Strings, lists and booleans are not metrics.
    """
    text = data.decode("utf-8", errors="replace")
    if path.endswith(".csv"):
        return _csv_metrics(path, text)
    try:
        doc = json.loads(text)
    except ValueError:
        raise MetricsError(f"{path} is not valid JSON.", hint="Write metrics as a JSON object, e.g. {\"accuracy\": 0.93}.") from None
    if isinstance(doc, list) and doc and isinstance(doc[-1], dict):
        doc = doc[-1]
    if not isinstance(doc, dict):
        raise MetricsError(f"{path} is not a JSON object of metrics.", hint="Write e.g. {\"accuracy\": 0.93}, or pass --file to pick other files.")
    out: dict[str, float] = {}
    _flatten(doc, "", out)
    return out


def _flatten(doc: dict, prefix: str, out: dict) -> None:
    for k, v in doc.items():
        if isinstance(v, dict):
            _flatten(v, f"{prefix}{k}.", out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + str(k)] = v


def _number(text: str):
    try:
        return float(text) if any(c in text for c in ".eEn") else int(text)
    except ValueError:
        return None


def _csv_metrics(path: str, text: str) -> dict[str, float]:
    table = [r for r in csv.reader(io.StringIO(text)) if r]
    if len(table) < 2:
        raise MetricsError(f"{path} has no rows of metrics.", hint="Write a header row and a row of values (or name,value rows).")
    header, body = table[0], table[1:]
    if len(header) == 2 and all(_number(r[0]) is None and len(r) == 2 for r in body):
        return {r[0]: n for r in body if (n := _number(r[1])) is not None}
    last = body[-1]
    return {h: n for h, v in zip(header, last) if (n := _number(v)) is not None}


def collect(store, repo: str, ref: str | None = None, patterns=DEFAULT_PATTERNS) -> list[dict]:
    """One row per metrics file of `repo@ref`: its metrics, the datum that wrote it,
    the params combination that datum read (if any) and the user commits it came from."""
    commit = store.resolve_commit(repo, ref)
    files = [f["path"] for f in listing_rows(store.list_files(repo, commit.id, "/", recursive=True))
             if f["type"] == "file" and any(fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], p) for p in patterns)]
    out = []
    for path in sorted(files):
        metrics = parse_metrics(f"{repo}@{commit.id[:12]}:{path}", store.read_file(repo, commit.id, path))
        tree = store.file_provenance(repo, commit.id, path)
        params_node = _params_node(tree)
        params = json.loads(store.read_file(params_node["repo"], params_node["commit"], params_node["path"])) if params_node else None
        if isinstance(params, dict):  # in the file name's order (the sweep's), not the JSON's sorted one
            order = params_of_name(params_node["path"]) or []
            params = {k: params[k] for k in order if k in params} | {k: v for k, v in params.items() if k not in order}
        datum = tree.get("datum") or {}
        out.append({
            "key": params_node["path"].rsplit("/", 1)[-1][: -len(".json")] if params_node else path,
            "repo": repo, "commit": commit.id, "path": path,
            "params": params if isinstance(params, dict) else None,
            "params_file": {k: params_node[k] for k in ("repo", "commit", "path")} if params_node else None,
            "datum": {k: datum.get(k) for k in ("pipeline", "id", "job", "key")} if datum else None,
            "inputs": sorted({(n["repo"], n["commit"], n["path"]) for n in _leaves(tree) if n is not tree}),
            "metrics": metrics,
        })
    for row in out:
        row["inputs"] = [{"repo": r, "commit": c, "path": p} for r, c, p in row["inputs"]]
    return out


def _params_node(tree: dict) -> dict | None:
    """The nearest sweep params file the datum (or the datums upstream of it) read."""
    level = list(tree.get("inputs") or [])
    while level:
        for node in level:
            if node.get("path") and params_of_name(node["path"]) is not None:
                return node
        level = [c for node in level for c in node.get("inputs") or []]
    return None


def _leaves(node: dict):
    """The user files at the origin of a provenance tree."""
    children = [c for c in node.get("inputs") or [] if "path" in c]
    if not children:
        yield node
    for c in children:
        yield from _leaves(c)


def require_files(rows: list[dict], repo: str, ref: str | None, patterns) -> list[dict]:
    if not rows:
        raise MetricsError(f"{repo}@{ref or 'master'} has no metrics files ({', '.join(patterns)}).",
                           hint="Have the step write e.g. /pfs/out/metrics.json, or pass --file PATTERN.")
    return rows


def history(store, repo: str, branch: str = "master", limit: int = 10, patterns=DEFAULT_PATTERNS) -> list[dict]:
    """The metrics of the last `limit` commits of a branch, oldest first (a row per file and commit)."""
    out = []
    for commit in reversed(store.list_commits(repo, branch, limit=limit)):
        if commit.state == "finished":
            out.extend(collect(store, repo, commit.id, patterns))
    return out


# ---------------------------------------------------------------- comparing


def metric_names(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(m for r in rows for m in r["metrics"]))


def param_names(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(p for r in rows for p in (r["params"] or {})))


def compare(rows: list[dict], baseline: list[dict]) -> list[dict]:
    """`rows` joined with `baseline` on their key (params combination or path), with
    `delta` = this value minus the baseline's for every metric both have; rows only in
    one side say `new` or `gone`."""
    before = {r["key"]: r for r in baseline}
    now = {r["key"]: r for r in rows}
    out = []
    for key in list(now) + [k for k in before if k not in now]:
        row, old = now.get(key), before.get(key)
        base = dict(row or old)
        base["status"] = "new" if old is None else "gone" if row is None else "both"
        base["baseline"] = old["metrics"] if old else None
        base["delta"] = {m: _round(v - old["metrics"][m]) for m, v in row["metrics"].items() if m in old["metrics"]} if row and old else {}
        if row is None:
            base["metrics"] = {}
        out.append(base)
    return out


def _round(x: float) -> float:
    return round(x, 10)  # 0.9 - 0.8 is 0.09999999999999998 otherwise


def best(rows: list[dict], metric: str, *, minimize: bool = False) -> dict:
    """The row (datum, params, inputs) with the highest `metric` (the lowest with `minimize`)."""
    scored = [r for r in rows if metric in r["metrics"]]
    if not scored:
        raise MetricsError(f"No metrics file has {metric!r}.", hint=f"The metrics there are: {', '.join(metric_names(rows)) or 'none'}.")
    pick = min if minimize else max
    # ties go to the first key in order, so the answer does not depend on listing order
    return pick(sorted(scored, key=lambda r: (r["key"], r["commit"])), key=lambda r: r["metrics"][metric])


# ----------------------------------------------------------------- charting


def series(rows: list[dict], metric: str, *, by_commit: bool = False) -> list[tuple[str, float]]:
    """(label, value) pairs to draw: per params combination (or file), or per commit."""
    out = []
    for r in rows:
        if metric in r["metrics"]:
            label = r["commit"][:12] + ("" if r["path"] == rows[0]["path"] and len({x["path"] for x in rows}) == 1 else f" {r['key']}") \
                if by_commit else r["key"]
            out.append((label, r["metrics"][metric]))
    if not out:
        raise MetricsError(f"No metrics file has {metric!r}.", hint=f"The metrics there are: {', '.join(metric_names(rows)) or 'none'}.")
    return out


def plot_png(points: list[tuple[str, float]], metric: str, path: str, *, title: str = "", line: bool = False) -> str:
    """Draw `points` as a bar chart (a line over commits when `line`) into a PNG at `path`."""
    try:
        import matplotlib
    except ImportError:
        raise MetricsError("Drawing a PNG chart needs matplotlib, which is not installed.",
                           hint="pip install 'dpl[experiments]', or leave out -o to draw it in the terminal.") from None
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    labels, values = [p[0] for p in points], [p[1] for p in points]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(points) + 2), 4), dpi=100)
    try:
        if line:
            ax.plot(labels, values, marker="o")
        else:
            ax.bar(labels, values, color="#4c72b0")
        ax.set_ylabel(metric)
        ax.set_title(title or metric)
        ax.tick_params(axis="x", labelrotation=45)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
