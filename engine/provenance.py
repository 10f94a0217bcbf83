"""Provenance and subvenance: where data came from, and what was made of it.

Three records make every answer a handful of indexed lookups:

- an output file's index row carries the id of the datum that wrote it, even
  when a later job carried it forward, so its provenance is the datum's
  record from the job that really ran it;
- a datum's record lists the input files it read as (repo, commit, path,
  content hash), and the job that ran it names the pipeline version (spec
  hash, code version) and executor (image digest);
- the `lineage` table maps an input file version (repo, path, hash) to the
  datums that read it, which is what the forward direction walks.

Trees come back as plain dicts (`-o json` prints them as they are);
`to_dot` / `to_mermaid` draw the same trees as graphs.  `Provenance` is the
component; the drawing functions below it need no store.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from .jobs import Jobs
from .repos import Repos
from ..storage import index
from ..storage.chunkstore import ChunkStore
from ..storage.errors import FileNotFound
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata import verifications as verification_rows
from ..storage.metadata.db import Database
from ..storage.paths import normalize_path

MAX_FILES = 20  # input files listed per datum; the rest are counted


class Provenance:
    """Provenance and subvenance of commits and files, why jobs ran, and the pipeline DAG.

    It reads single index rows and datum tables through `storage.index`
    (a lookup in a commit's layers, not the merged file table `Files` gives).
    """

    def __init__(self, db: Database, chunks: ChunkStore, repos: Repos, jobs: Jobs):
        self.db, self.chunks, self.repos, self.jobs = db, chunks, repos, jobs
        self._pipeline_repo: dict[str, bool] = {}  # repo name -> is a pipeline's output repo

    # ------------------------------------------------------- commit level

    def commit_provenance(self, repo: str, commit_id: str, _depth: int = 0) -> dict:
        """A commit's job, pipeline version, code, executor and input commits, recursively."""
        commit = self.repos.get_commit(repo, commit_id)
        node = {"repo": repo, "commit": commit.id, "branch": commit.branch, "origin": commit.origin}
        if commit.job is None or _depth > 50:
            return node
        job = job_rows.get(self.db, repo, commit.job)
        if job is None:
            return node
        version = pipeline_rows.version(self.db, repo, job.version)
        node["job"] = {"pipeline": repo, "id": job.id, "state": job.state, "executor": job.executor, "code": job.code}
        if (verified := self.verification(repo, commit.id)) is not None:
            node["verification"] = verified
        if version is not None:
            node["pipeline_version"] = {
                "version": version.version,
                "spec_hash": version.spec_hash,
                "transform_hash": version.transform_hash,
                "spec": version.spec,
                "code": version.code,
            }
        node["inputs"] = [
            {"name": i["name"], "branch": i["branch"], **(self.commit_provenance(i["repo"], i["commit"], _depth + 1) if i["commit"] else {"repo": i["repo"], "commit": None})}
            for i in job.inputs
        ]
        return node

    def verification(self, repo: str, commit_id: str) -> dict | None:
        """What `dpl verify` last found re-running the datums of an output commit; None if never verified."""
        v = verification_rows.get(self.db, repo, commit_id)
        if v is None:
            return None
        from .verify import as_dict  # the re-running machinery, only when there is something to show

        return as_dict(v)

    def origin_commits(self, repo: str, commit_id: str) -> list[dict]:
        """The user commits at the origin of a commit's provenance."""
        out, stack = [], [self.commit_provenance(repo, commit_id)]
        while stack:
            node = stack.pop()
            if "job" not in node and node.get("commit"):
                out.append({"repo": node["repo"], "commit": node["commit"]})
            stack.extend(node.get("inputs", []))
        return sorted({(o["repo"], o["commit"]): o for o in out}.values(), key=lambda o: o["repo"])

    # --------------------------------------------------------- file level

    def _file_at(self, repo: str, commit_id: str, path: str) -> dict | None:
        """One file's index row at a commit, without merging the whole index."""
        commit = self.repos.get_commit(repo, commit_id)
        layers = commit.layers
        if commit.state == "open" and commit.parent:
            layers = self.repos.get_commit(repo, commit.parent).layers + commit.delta
        rows = index.lookup([index.read_layer(self.chunks, l) for l in layers], [path])
        return rows.to_pylist()[0] if rows.num_rows else None

    def file_provenance(self, repo: str, ref: str | None, path: str) -> dict:
        """Backward: the datum that wrote a file, the files it read, and so on to user commits."""
        commit = self.repos.resolve_commit(repo, ref)
        path = normalize_path(path)
        row = self._file_at(repo, commit.id, path)
        if row is None:
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        node = self._file_node(repo, commit.id, path, row, 0)
        if "datum" in node and (verified := self.verification(repo, commit.id)) is not None:
            # the commit's verdict, and this file's datum's own, if the sample re-ran it
            mine = next((d for d in verified["datums"] if d["datum"] == node["datum"]["id"]), None)
            node["verification"] = {"commit": verified, "datum": mine}
        return node

    def _file_node(self, repo: str, commit_id: str, path: str, row: dict | None, depth: int) -> dict:
        node = {"repo": repo, "commit": commit_id, "path": path,
                "hash": row["hash"].hex() if row else None, "size": row["size"] if row else None}
        if row is None or row.get("datum") is None or depth > 50:
            node["origin"] = "user" if row is not None else "missing"
            return node
        datum = row["datum"].hex()
        rec = datum_rows.first_success(self.db, repo, datum)
        if rec is None:
            node["origin"] = "unknown datum"
            return node
        job = job_rows.get(self.db, repo, rec.job)
        version = pipeline_rows.version(self.db, repo, job.version) if job else None
        node["datum"] = {
            "pipeline": repo, "id": datum, "job": rec.job, "key": rec.key,
            "spec_hash": version.spec_hash if version else None,
            # git's view when the pipeline version was made, and the files the job really ran
            "code": (version.code if version else {}) | (job.code if job else {}),
            "executor": job.executor if job else {},
        }
        inputs = []
        for inp in rec.inputs:
            files = inp["files"]
            for fpath, fhash, fsize in files[:MAX_FILES]:
                upstream = self._is_pipeline_repo(inp["repo"])
                child_row = self._file_at(inp["repo"], inp["commit"], fpath) if upstream else {"hash": bytes.fromhex(fhash), "size": fsize, "datum": None}
                child = self._file_node(inp["repo"], inp["commit"], fpath, child_row, depth + 1)
                child["input"] = inp["name"]
                child["hash"] = fhash  # the version the datum read
                inputs.append(child)
            if len(files) > MAX_FILES:
                inputs.append({"repo": inp["repo"], "commit": inp["commit"], "input": inp["name"], "more_files": len(files) - MAX_FILES})
        node["inputs"] = inputs
        return node

    def _is_pipeline_repo(self, repo: str) -> bool:
        if repo not in self._pipeline_repo:
            row = repo_rows.get(self.db, repo)
            self._pipeline_repo[repo] = row is not None and row.kind == "pipeline"
        return self._pipeline_repo[repo]

    def file_subvenance(self, repo: str, ref: str | None, path: str) -> dict:
        """Forward: every downstream commit and file derived from this file version."""
        commit = self.repos.resolve_commit(repo, ref)
        path = normalize_path(path)
        row = self._file_at(repo, commit.id, path)
        if row is None:
            raise FileNotFound(f"{repo}@{ref or 'master'}:{path} does not exist.", hint=f"See `dpl list-file {repo}@{ref or 'master'}`.")
        return self._derived(repo, commit.id, path, row["hash"].hex(), 0, since=commit.created)

    def _derived(self, repo: str, commit_id: str | None, path: str, hash_hex: str, depth: int, since: float = 0.0) -> dict:
        node = {"repo": repo, "commit": commit_id, "path": path, "hash": hash_hex, "derived": []}
        if depth > 50:
            return node
        for pipeline, datum in datum_rows.readers(self.db, repo, path, hash_hex):
            out = datum_rows.output(self.db, pipeline, datum)
            files = []
            if out is not None and out.count:
                table = index.read_table(self.chunks, bytes.fromhex(out.batch)).slice(out.start, out.count)
                files = list(zip(table["path"].to_pylist(), [h.hex() for h in table["hash"].to_pylist()]))
            commits = self._commits_holding(pipeline, bytes.fromhex(datum), since)
            for fpath, fhash in files:
                child = self._derived(pipeline, commits[-1]["commit"] if commits else None, fpath, fhash, depth + 1, since)
                child["datum"] = datum
                child["commits"] = commits
                child["on_branch_head"] = any(c["head_of"] for c in commits)
                node["derived"].append(child)
        return node

    def _commits_holding(self, pipeline: str, datum: bytes, since: float = 0.0) -> list[dict]:
        """Output commits of `pipeline` made since `since` whose jobs included `datum`, oldest first.

        Datum ids hash content, so a job that ran before this file version
        existed may hold the same datum (same bytes, same output); those
        commits are not derived from *this* version and are left out.
        """
        heads = {b.head: b.name for b in repo_rows.branches(self.db, pipeline)}
        out = []
        for job in job_rows.succeeded_since(self.db, pipeline, since):
            table = index.read_table(self.chunks, bytes.fromhex(job.datum_list))
            if pc.any(pc.equal(table["datum"], pa.scalar(datum, pa.binary(16)))).as_py():
                out.append({"commit": job.output_commit, "job": job.id, "head_of": heads.get(job.output_commit)})
        return out

    # --------------------------------------------------------------- why

    def why(self, pipeline: str, job: str) -> dict:
        """Why a job's datums ran: counts by reason, and the number skipped."""
        row = self.jobs.job(pipeline, job)
        reasons = Counter()
        for reason, n in datum_rows.reason_counts(self.db, row.pipeline, row.id).items():
            reasons[reason or "unknown"] += n
        return {"pipeline": row.pipeline, "job": row.id, "reasons": dict(reasons.most_common()), "skipped": row.skipped}

    # --------------------------------------------------------------- dag

    def dag(self) -> dict:
        """The pipeline DAG: repos and pipelines as nodes, inputs as edges."""
        nodes = [{"name": r.name, "kind": r.kind} for r in repo_rows.all_repos(self.db)]
        links = [(e.repo, e.pipeline) for e in pipeline_rows.all_inputs(self.db)]
        return {"nodes": nodes, "edges": links}


# ------------------------------------------------------------------ graphs


def _label(node: dict) -> str:
    where = f"{node['repo']}@{(node.get('commit') or '-')[:12]}"
    return f"{where}:{node['path']}" if node.get("path") else where


def edges(tree: dict, backward: bool = True) -> list[tuple[str, str, str]]:
    """(from, to, via) edges of a provenance (or subvenance) tree, data flowing left to right."""
    out = []
    children = tree.get("inputs") if backward else tree.get("derived")
    for child in children or []:
        if "more_files" in child:
            continue
        via = (tree.get("datum") or {}).get("pipeline", "") if backward else child["repo"]
        out.append((_label(child), _label(tree), via) if backward else (_label(tree), _label(child), via))
        out.extend(edges(child, backward))
    return sorted(set(out))


def to_dot(tree: dict, backward: bool = True) -> str:
    lines = ["digraph provenance {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    for a, b, via in edges(tree, backward):
        lines.append(f'  "{a}" -> "{b}" [label="{via}"];')
    if len(lines) == 3:
        lines.append(f'  "{_label(tree)}";')
    return "\n".join(lines + ["}"]) + "\n"


def to_mermaid(tree: dict, backward: bool = True) -> str:
    ids: dict[str, str] = {}

    def nid(label: str) -> str:
        return ids.setdefault(label, f"n{len(ids)}")

    lines = ["flowchart LR"]
    for a, b, via in edges(tree, backward):
        lines.append(f'  {nid(a)}["{a}"] -->|{via}| {nid(b)}["{b}"]')
    if len(lines) == 1:
        lines.append(f'  {nid(_label(tree))}["{_label(tree)}"]')
    return "\n".join(lines) + "\n"


def dag_mermaid(graph: dict) -> str:
    lines = ["flowchart LR"]
    for n in graph["nodes"]:
        shape = f'[("{n["name"]}")]' if n["kind"] == "user" else f'[["{n["name"]}"]]'
        lines.append(f"  {n['name']}{shape}")
    lines += [f"  {a} --> {b}" for a, b in graph["edges"]]
    return "\n".join(lines) + "\n"


def dag_dot(graph: dict) -> str:
    lines = ["digraph dag {", "  rankdir=LR;"]
    for n in graph["nodes"]:
        lines.append(f'  "{n["name"]}" [shape={"cylinder" if n["kind"] == "user" else "box"}];')
    lines += [f'  "{a}" -> "{b}";' for a, b in graph["edges"]]
    return "\n".join(lines + ["}"]) + "\n"
