"""Console pages for work: the DAG, pipelines, jobs, datums, lineage and search.

Each view makes the Store calls the matching /api/v1 handlers make and
shapes their answers for a template; nothing here decides anything the
engine decides.
"""

from __future__ import annotations

import difflib
import json
import shlex
from urllib.parse import quote, urlencode
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .pages import PAGE, code_label, html_errors, page_of, render, store
from .session import can_write, readable, require_read
from ..wire import decode_cursor, encode_cursor, plain
from ...storage.errors import DplError

router = APIRouter(include_in_schema=False)

@router.get("/")
@html_errors
def dag(request: Request):
    s = store(request)
    graph = plain(s.dag())
    pipelines = {p["name"]: p for p in plain(s.list_pipelines())}
    shown = readable(request, [n["name"] for n in graph["nodes"]])  # a reader sees the repos they may read
    nodes = []
    for node in graph["nodes"]:
        if node["name"] not in shown:
            continue
        p = pipelines.get(node["name"])
        nodes.append({"id": node["name"], "kind": "pipeline" if p else "repo",
                      "state": (p.get("last_job_state") or "none") if p else "repo",
                      "paused": bool(p and p["state"] != "running"),
                      "url": f"/pipelines/{node['name']}" if p else f"/repos/{node['name']}"})
    edges = [{"source": a, "target": b} for a, b in graph["edges"] if a in shown and b in shown]
    return render(request, "dag.html", nodes=nodes, graph={"nodes": nodes, "edges": edges})


@router.get("/pipelines/{name}")
@html_errors
def pipeline(request: Request, name: str, cursor: Optional[str] = None):
    s = store(request)
    require_read(request, name)  # a pipeline is read through its output repo, as in the API
    info = plain(s.inspect_pipeline(name, history=True))
    jobs, next_cursor = page_of(s.list_jobs(name), cursor)
    if request.headers.get("hx-request") and cursor:
        return render(request, "jobs_rows.html", info=info, jobs=jobs, next_cursor=next_cursor)
    versions = [h["version"] for h in info.get("history", [])]
    return render(request, "pipeline.html", info=info, jobs=jobs, next_cursor=next_cursor, versions=versions,
                  can_write=can_write(request, name, "owner"))  # stop and start need the owner role


@router.get("/pipelines/{name}/diff")
@html_errors
def pipeline_diff(request: Request, name: str, a: int, b: int):
    s = store(request)
    require_read(request, name)

    def text(version: int) -> list[str]:
        return (json.dumps(s.pipeline_spec(name, version).raw, indent=2, sort_keys=True) + "\n").splitlines(keepends=True)

    diff = "".join(difflib.unified_diff(text(a), text(b), f"{name} v{a}", f"{name} v{b}"))
    return render(request, "spec_diff.html", name=name, a=a, b=b, diff=diff)


@router.get("/jobs/{job}")
@html_errors
def job(request: Request, job: str, pipeline: Optional[str] = None, cursor: Optional[str] = None, fragment: Optional[str] = None):
    s = store(request)
    info = plain(s.inspect_job(pipeline, job))
    require_read(request, info["pipeline"])
    # Failed datums first (they are what a reader came for), one page read by
    # the engine from the metadata: a job may have 100,000 datums.
    after = decode_cursor(cursor).get("after") if cursor else None
    rows = s.list_datums(info["pipeline"], info["id"], limit=PAGE + 1, after=after, failed_first=True)
    next_cursor = encode_cursor({"after": rows[PAGE - 1]["datum"]}) if len(rows) > PAGE else None
    rows = plain(rows[:PAGE])
    tails = {}
    for d in rows:
        if d["state"] == "failed":
            tails[d["datum"]] = "\n".join("\n".join((r["stdout"].splitlines()[-10:] + r["stderr"].splitlines()[-10:]))
                                          for r in s.datum_logs(info["pipeline"], info["id"], d["datum"])).strip()
    context = dict(info=info, datums=rows, next_cursor=next_cursor, tails=tails,
                   can_restart=can_write(request, info["pipeline"], "owner"))  # restart-datum needs the owner role
    if fragment == "datums":  # the rows alone: a page of "more", or the refresh when a followed job ends
        return render(request, "datum_rows.html", **context)
    if fragment == "meta":  # why the datums ran counts an index entry per datum: fetched after the page has painted
        return render(request, "job_meta.html", why=plain(s.why(info["pipeline"], info["id"])), **context)
    return render(request, "job.html", **context)


@router.get("/jobs/{job}/datums/{datum}")
@html_errors
def datum(request: Request, job: str, datum: str, pipeline: Optional[str] = None):
    s = store(request)
    job_info = plain(s.inspect_job(pipeline, job))
    require_read(request, job_info["pipeline"])
    info = plain(s.inspect_datum(job_info["pipeline"], job, datum))
    logs = plain(s.datum_logs(job_info["pipeline"], job, datum))
    spec = plain(s.inspect_pipeline(job_info["pipeline"])).get("spec", {})
    return render(request, "datum.html", info=info, job=job_info, logs=logs, debug=debug_command(info, job_info, spec))


def debug_command(datum: dict, job: dict, spec: dict) -> str:
    """Shell lines that rebuild this datum's /pfs from its exact input commits
    and run the step on them in a bubblewrap sandbox, as the local executor does."""
    transform = spec.get("transform", {})
    lines = [f"mkdir -p dpl-debug-{datum['datum'][:12]}/pfs/out && cd dpl-debug-{datum['datum'][:12]}"]
    for i in datum.get("inputs", []):
        files = i.get("files") or []
        single = len(files) == 1 and files[0][0] == i["path"]
        dest = f"pfs/{i['name']}{i['path'] if i['path'] != '/' else ''}"
        lines.append(f"dpl get-file {'' if single else '-r '}{shlex.quote(i['repo'] + '@' + i['commit'] + ':' + i['path'])} -o {shlex.quote(dest)}")
    cmd = transform.get("cmd") or ["sh"]
    run = f"bwrap --dev-bind / / --bind \"$PWD/pfs\" /pfs -- {shlex.join(cmd)}"
    if transform.get("stdin"):
        run += " <<'DPL_STDIN'\n" + "\n".join(transform["stdin"]) + "\nDPL_STDIN"
    lines.append(run)
    return "\n".join(lines)


# ------------------------------------------------------------------- lineage


def lineage_graph(s, repo: str, path: str, ref: Optional[str]) -> dict:
    """Nodes and edges of a file's lineage: back to user commits (provenance)
    and forward to what was derived from it (subvenance)."""
    back = plain(s.file_provenance(repo, ref, path))
    forward = plain(s.file_subvenance(repo, back["commit"], path))
    nodes, edges = {}, set()

    def key(n):
        return f"{n['repo']}@{n['commit']}:{n['path']}"

    def add(n, root=False):
        k = key(n)
        d = n.get("datum")
        if d and not isinstance(d, dict):  # a subvenance node names its datum; its commit names the job
            d = {"id": d, "pipeline": n["repo"], "job": next((c.get("job") for c in n.get("commits", []) if c.get("job")), None)}
        datum = d or None
        node = nodes.setdefault(k, {"id": k, "repo": n["repo"], "commit": n["commit"], "path": n["path"],
                                    "hash": n.get("hash"), "origin": n.get("origin") or ("pipeline" if datum else "user"),
                                    "datum": None, "root": root})
        if datum and not node["datum"]:
            node["datum"] = {**datum, "code_label": code_label(datum.get("code"))}  # the page's words for it, in the graph too
            node["origin"] = "pipeline"
        return k

    def walk_back(n):
        k = add(n)
        for i in n.get("inputs", []):
            edges.add((walk_back(i), k))
        return k

    def walk_forward(n):
        k = add(n)
        for c in n.get("derived", []):
            edges.add((k, walk_forward(c)))
        return k

    root = walk_back(back)
    walk_forward(forward)
    nodes[root]["root"] = True
    return {"nodes": list(nodes.values()), "edges": [{"source": a, "target": b} for a, b in sorted(edges)]}


@router.get("/lineage")
@html_errors
def lineage(request: Request, repo: str, path: str, ref: Optional[str] = None):
    require_read(request, repo)
    graph = lineage_graph(store(request), repo, path, ref)
    return render(request, "lineage.html", repo=repo, path=path, ref=ref, graph=graph)


@router.get("/lineage.json")
def lineage_json(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """One node's lineage, for the graph to expand it in place."""
    require_read(request, repo)
    return JSONResponse(lineage_graph(store(request), repo, path, ref))


# -------------------------------------------------------------------- search


@router.get("/search")
@html_errors
def search(request: Request, q: str = ""):
    s, q = store(request), q.strip()
    hits = []
    if q:
        low = q.lower()
        for r in s.list_repos():
            if low in r["name"].lower():
                hits.append({"kind": "repo", "repo": r["name"], "label": r["name"], "url": f"/repos/{r['name']}"})
        for p in s.list_pipelines():
            if low in p["name"].lower():
                hits.append({"kind": "pipeline", "repo": p["name"], "label": p["name"], "url": f"/pipelines/{p['name']}"})
        for finder in (_commit_hits, _job_hits, _path_hits):
            try:
                hits += finder(s, q)
            except DplError:
                pass  # q is not that kind of thing
    if hits:
        allowed = readable(request, {h["repo"] for h in hits})
        hits = [h for h in hits if h["repo"] in allowed]
    return render(request, "search.html", q=q, hits=hits[:200])


def _commit_hits(s, q):
    return [{"kind": "commit", "repo": c["repo"], "label": f"{c['repo']}@{c['id']}", "url": f"/repos/{c['repo']}/tree?ref={c['id']}"}
            for c in plain(s.commits_with_id(q))] if len(q) >= 8 else []


def _job_hits(s, q):
    if len(q) < 8:
        return []
    j = plain(s.inspect_job(None, q))
    return [{"kind": "job", "repo": j["pipeline"], "label": f"{j['pipeline']}@{j['id']}", "url": f"/jobs/{j['id']}?{urlencode({'pipeline': j['pipeline']})}"}]


def _path_hits(s, q):
    """A path (or glob) searched at the head of every repo's master."""
    if not q.startswith("/"):
        return []
    pattern = q if any(ch in q for ch in "*?[") else q.rstrip("/") + "*"
    out = []
    for r in s.list_repos():
        try:
            rows = plain(s.glob_files(r["name"], None, pattern))
        except DplError:
            continue
        for row in rows[:50]:
            out.append({"kind": "file", "repo": r["name"], "label": f"{r['name']}:{row['path']}",
                        "url": f"/repos/{quote(r['name'])}/{'tree' if row.get('type') == 'dir' else 'file'}?{urlencode({'path': row['path']})}"})
    return out
