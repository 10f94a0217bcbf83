"""/api/v1 for work: pipelines, jobs, datums, logs, provenance, the DAG and secrets.

As in `api_data`, each handler is one Store call.  Secrets are write-only:
no route returns a value, only names and keys.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .guard import guard, user
from .wire import BadCursor, check_limit, decode_cursor, encode_cursor, page, page_newest_first, plain

router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])  # guard.RULES: who may call each route


def _store(request: Request):
    return request.app.state.store


def _wake(request: Request) -> None:
    request.app.state.scheduler.wake()


# ----------------------------------------------------------------- pipelines


@router.get("/pipelines", tags=["pipelines"])
def list_pipelines(request: Request, limit: Optional[int] = None, cursor: Optional[str] = None):
    rows = _store(request).list_pipelines()
    mine = _store(request).auth.readable(user(request), [p["name"] for p in rows])
    return page([p for p in rows if p["name"] in mine], limit, cursor)


def _with_wave(request: Request, info: dict) -> dict:
    _wake(request)
    return {**plain(info), "wave": _store(request).pipeline_wave(info["name"])}


@router.post("/pipelines", tags=["pipelines"], status_code=201)
def create_pipeline(request: Request, spec: str = Body(..., description="The spec's text, JSON or YAML, as a spec file holds it."),
                    source: str = Body("<spec>"), reprocess: bool = Body(False)):
    """Create a pipeline; its first job is queued and the scheduler runs it.
    Its creator must read every input, and its jobs act with the creator's rights."""
    store = _store(request)
    store.auth.check_pipeline(user(request), spec, update=False)
    made = store.create_pipeline(spec, source=source, reprocess=reprocess)
    store.auth.pipeline_created(spec, user(request))
    return _with_wave(request, made)


@router.put("/pipelines", tags=["pipelines"])
def update_pipeline(request: Request, spec: str = Body(...), source: str = Body("<spec>"), reprocess: bool = Body(False)):
    store = _store(request)
    store.auth.check_pipeline(user(request), spec, update=True)
    made = store.update_pipeline(spec, source=source, reprocess=reprocess)
    store.auth.pipeline_created(spec, user(request))
    return _with_wave(request, made)


@router.post("/pipelines/validate", tags=["pipelines"])
def validate_pipeline(request: Request, spec: str = Body(...), source: str = Body("<spec>")):
    """Check a spec file as create-pipeline would, changing nothing (`dpl validate-pipeline`)."""
    return _store(request).validate_pipeline(spec, source=source)


@router.post("/pipelines/{name}/edit", tags=["pipelines"])
def edit_pipeline(request: Request, name: str, spec: str = Body(...), reprocess: bool = Body(False)):
    """Update a pipeline to its edited spec, keeping its code directory (`dpl edit-pipeline`)."""
    store = _store(request)
    store.auth.check_pipeline(user(request), spec, update=True)
    made = store.edit_pipeline(name, spec, reprocess=reprocess)
    store.auth.pipeline_created(spec, user(request))
    return _with_wave(request, made)


@router.get("/pipelines/{name}", tags=["pipelines"])
def inspect_pipeline(request: Request, name: str, history: bool = False):
    return plain(_store(request).inspect_pipeline(name, history=history))


@router.delete("/pipelines/{name}", tags=["pipelines"], status_code=204)
def delete_pipeline(request: Request, name: str, force: bool = False, keep_repo: bool = False):
    _store(request).delete_pipeline(name, force=force, keep_repo=keep_repo)
    if not keep_repo:
        _store(request).auth.repos_deleted([name])


@router.post("/pipelines/{name}/stop", tags=["pipelines"], status_code=204)
def stop_pipeline(request: Request, name: str):
    _store(request).stop_pipeline(name)


@router.post("/pipelines/{name}/start", tags=["pipelines"])
def start_pipeline(request: Request, name: str):
    _store(request).start_pipeline(name)
    _wake(request)
    return {"name": name, "wave": _store(request).pipeline_wave(name)}


@router.get("/pipelines/{name}/wave", tags=["pipelines"])
def pipeline_wave(request: Request, name: str):
    """The global id of the pipeline's newest job."""
    return {"name": name, "wave": _store(request).pipeline_wave(name)}


@router.post("/pipelines/{name}/cron", tags=["pipelines"])
def run_cron(request: Request, name: str):
    """Tick every cron input of a pipeline now, off schedule."""
    ticks = _store(request).run_cron(name)
    _wake(request)
    return [{"cron": plain(ci), "commit": plain(commit)} for ci, commit in ticks]


# ---------------------------------------------------------- jobs and datums


@router.get("/jobs", tags=["jobs"])
def list_jobs(request: Request, pipeline: Optional[str] = None, wave: Optional[str] = None,
              limit: Optional[int] = None, cursor: Optional[str] = None):
    """Jobs, newest first (of one pipeline, or of one global id)."""
    rows = _store(request).list_jobs(pipeline, wave)
    if pipeline is not None:
        _store(request).auth.require(user(request), pipeline, "reader", "read its jobs")
    mine = _store(request).auth.readable(user(request), {j["pipeline"] for j in rows})
    return page_newest_first([j for j in rows if j["pipeline"] in mine], limit, cursor)


@router.get("/jobs/{job}", tags=["jobs"])
def inspect_job(request: Request, job: str, pipeline: Optional[str] = None):
    return plain(_store(request).inspect_job(pipeline, job))


@router.get("/jobs/{job}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(request: Request, job: str, pipeline: Optional[str] = None):
    """Watch a job live: server-sent events, one `job` event (the job as JSON)
    each time its state or datum counts change, the last when it ends."""
    store = _store(request)
    info = await run_in_threadpool(store.inspect_job, pipeline, job)  # an unknown job is a 404, before the stream

    async def events():
        nonlocal info
        last = None
        while True:
            if info != last:
                yield f"event: job\ndata: {json.dumps(plain(info), separators=(',', ':'))}\n\n"
                last = info
            if info["state"] not in ("created", "running") or await request.is_disconnected():
                return
            # The engine has no push for job changes yet: a read every quarter second, per watcher.
            await asyncio.sleep(0.25)
            info = await run_in_threadpool(store.inspect_job, info["pipeline"], info["id"])

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job}/why", tags=["provenance"])
def why(request: Request, job: str, pipeline: Optional[str] = None):
    return plain(_store(request).why(pipeline, job))


@router.get("/jobs/{job}/datums", tags=["jobs"])
def list_datums(request: Request, job: str, pipeline: Optional[str] = None, limit: Optional[int] = None, cursor: Optional[str] = None,
                failed_first: bool = False):
    """A job's datums; with `failed_first`, failed ones first, each page read from the metadata alone (no whole list per page)."""
    if not failed_first:
        return page(_store(request).list_datums(pipeline, job), limit, cursor)
    n = check_limit(limit)
    after = decode_cursor(cursor).get("after")
    if after is not None and not isinstance(after, str):
        raise BadCursor("The cursor is not one this server gave out.", hint="Start the listing again without a cursor.")
    rows = _store(request).list_datums(pipeline, job, limit=n + 1, after=after, failed_first=True)
    return {"items": plain(rows[:n]), "next_cursor": encode_cursor({"after": rows[n - 1]["datum"]}) if len(rows) > n else None}


@router.get("/jobs/{job}/datums/{datum}", tags=["jobs"])
def inspect_datum(request: Request, job: str, datum: str, pipeline: Optional[str] = None):
    return plain(_store(request).inspect_datum(pipeline, job, datum))


@router.post("/jobs/{job}/stop", tags=["jobs"])
def stop_job(request: Request, job: str, pipeline: Optional[str] = None):
    """Kill an unfinished job (`dpl stop-job`)."""
    return plain(_store(request).stop_job(pipeline, job))


@router.delete("/jobs/{job}", tags=["jobs"])
def delete_job(request: Request, job: str, pipeline: Optional[str] = None):
    """Delete a finished job, its datums and logs, and its output commit if it is the newest (`dpl delete-job`)."""
    return plain(_store(request).delete_job(pipeline, job))


@router.post("/jobs/{job}/restart", tags=["jobs"])
def restart_datum(request: Request, job: str, pipeline: Optional[str] = None, datum: Optional[str] = None, all_failed: bool = False):
    """Run a finished job's failed datums again in a new job (`dpl restart-datum`)."""
    wave = _store(request).restart_datum(pipeline, job, datum, all_failed=all_failed)
    _wake(request)
    return {"wave": wave}


@router.post("/pipelines/{name}/rerun", tags=["pipelines"])
def rerun_pipeline(request: Request, name: str, reprocess: bool = False):
    """A new job over the pipeline's current inputs (`dpl rerun-pipeline`)."""
    wave = _store(request).rerun_pipeline(name, reprocess=reprocess)
    _wake(request)
    return {"name": name, "wave": wave}


@router.get("/jobs/{job}/logs", tags=["jobs"])
def datum_logs(request: Request, job: str, pipeline: Optional[str] = None, datum: Optional[str] = None,
               limit: Optional[int] = None, cursor: Optional[str] = None):
    """The stdout and stderr of a job's datums (secrets scrubbed when they were recorded)."""
    return page(_store(request).datum_logs(pipeline, job, datum), limit, cursor)


# ---------------------------------------------------------------- provenance


@router.get("/provenance", tags=["provenance"])
def file_provenance(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """Where a file came from: the datum that wrote it, what it read, back to user commits."""
    return plain(_store(request).file_provenance(repo, ref, path))


@router.get("/subvenance", tags=["provenance"])
def file_subvenance(request: Request, repo: str, path: str, ref: Optional[str] = None):
    """What was derived from a file version, downstream."""
    return plain(_store(request).file_subvenance(repo, ref, path))


@router.get("/dag", tags=["provenance"])
def dag(request: Request):
    return plain(_store(request).dag())


# ------------------------------------------------------------------- secrets


@router.get("/secrets", tags=["secrets"])
def list_secrets(request: Request, limit: Optional[int] = None, cursor: Optional[str] = None):
    """Names and keys, never values."""
    return page(_store(request).list_secrets(), limit, cursor)


@router.post("/secrets", tags=["secrets"], status_code=201)
def create_secret(request: Request, name: str = Body(...), data: dict[str, str] = Body(...), overwrite: bool = Body(False)):
    """Store a secret; the answer names its keys and never echoes a value."""
    return plain(_store(request).create_secret(name, data, overwrite=overwrite))


@router.get("/secrets/{name}", tags=["secrets"])
def inspect_secret(request: Request, name: str):
    return plain(_store(request).inspect_secret(name))


@router.delete("/secrets/{name}", tags=["secrets"], status_code=204)
def delete_secret(request: Request, name: str):
    _store(request).delete_secret(name)
