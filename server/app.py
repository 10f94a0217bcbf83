"""The `dpl serve` application: the Store behind FastAPI, plus the scheduler.

`create_app(store)` wires the parts: the API routers (`api_data`,
`api_pipelines`), the scheduler's process (started and stopped with the
app's lifespan), one JSON log line and one metrics sample per request, /healthz
and /metrics.  Every `DplError` becomes a 4xx answer holding its one
sentence and hint, as the CLI prints them; anything else is a 500 that says
only that the server failed (the traceback goes to the server's log).
"""

from __future__ import annotations

import contextlib
import time
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api_auth, api_data, api_pipelines, api_uploads, console, spool
from .guard import gate_pages
from .limits import BodyLimit
from .observe import Metrics, log_event
from .schedproc import SchedulerProcess
from ..storage.errors import DplError

API_VERSION = "v1"

# The HTTP status of each kind of user error, by class name (the error
# modules of both layers define them; a test checks every name exists);
# any other DplError is a 400.
_STATUS = {
    404: ("RepoNotFound", "BranchNotFound", "CommitNotFound", "FileNotFound", "PipelineNotFound", "JobNotFound",
          "DatumNotFound", "SecretNotFound", "StoreNotFound"),
    409: ("RepoExists", "PipelineExists", "SecretExists", "RepoInUse", "CommitInUse", "WouldOrphan", "Conflict",
          "CommitNotOpen", "PathCollision", "AmbiguousRef"),
    503: ("StorageUnavailable", "ExecutorUnavailable"),
    507: ("DiskFull",),
    500: ("Corruption",),
}
_STATUS_OF = {name: status for status, names in _STATUS.items() for name in names}


def error_status(error: DplError) -> int:
    if getattr(error, "http_status", None):  # errors outside the two error modules say their status (engine/auth.py)
        return error.http_status
    for cls in type(error).__mro__:
        if cls.__name__ in _STATUS_OF:
            return _STATUS_OF[cls.__name__]
    return 400


def error_body(error: DplError) -> dict:
    return {"error": error.message, "hint": error.hint, "type": type(error).__name__}


def create_app(store, *, executor: str | None = None, poll: float = 2.0, schedule: bool = True, grace: float = 30.0,
               workers: int = 1) -> FastAPI:
    metrics = Metrics(store)
    scheduler = SchedulerProcess(store, metrics, executor=executor, poll=poll, enabled=schedule, workers=workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        _warm(store)
        swept = spool.sweep(store.root)  # what a killed server was receiving: never committed
        scheduler.start()
        log_event("server.start", store=str(store.root), scheduler=schedule, swept_uploads=swept)
        yield
        # Uvicorn stopped taking requests and finished those in flight; now the jobs.
        log_event("server.stopping", grace=grace, busy=scheduler.busy)
        clean = scheduler.stop(grace)
        left = [] if clean else [f"{j['pipeline']}@{j['id'][:12]}" for j in store.list_jobs() if j["state"] == "running"]
        log_event("server.stop", clean=clean, resumes_at_next_start=left)

    app = FastAPI(
        title="dpl",
        version=_version(),
        description="Data-versioned pipelines: repos, commits, files, pipelines, jobs and provenance over HTTP. "
        "The same operations as the `dpl` command line and the embedded Python Store.",
        lifespan=lifespan,
    )
    app.state.store, app.state.metrics, app.state.scheduler = store, metrics, scheduler

    @app.exception_handler(DplError)
    async def dpl_error(request: Request, error: DplError):
        return JSONResponse(error_body(error), status_code=error_status(error))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}.", "hint": "See /docs for the request's shape.",
                             "type": "InvalidRequest"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def framework_refusal(request: Request, error: StarletteHTTPException):
        # The framework's own refusals (no such route, wrong method, a body it cannot parse) in the API's shape.
        if error.status_code == 404:
            sentence = f"There is no {request.method} {request.url.path} here."
        elif error.status_code == 405:
            sentence = f"{request.url.path} does not take {request.method}."
        else:
            sentence = f"{str(error.detail).rstrip('.') or 'The request is not valid'}."
        return JSONResponse({"error": sentence, "hint": "See /docs for the API's routes and their requests.", "type": "InvalidRequest"},
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        log_event("server.error", path=request.url.path, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        return JSONResponse({"error": "The server failed on this request; its log says why.", "hint": None, "type": "ServerError"},
                            status_code=500)

    @app.get("/healthz", tags=["server"])
    def healthz():
        """200 while the server answers, its metadata database does and its scheduler runs; else 503."""
        store.list_repos()
        body = {"ok": scheduler.healthy, "scheduler": scheduler.running, "workers": scheduler.workers, "rounds": scheduler.rounds}
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    def metrics_text():
        """Prometheus text format: jobs, datums, commits, request latencies."""
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Routes are matched one by one in this order: the data paths (reads, puts,
    # negotiated uploads) before the rest.  No two routers' paths overlap.
    app.include_router(api_data.router)
    app.include_router(api_uploads.router)
    app.include_router(api_pipelines.router)
    app.include_router(api_auth.router)
    console.mount(app)  # the pages at / (after the API, whose routes are matched first)
    return _Observed(app, metrics)


class _Observed:
    """ASGI wrapper: one JSON log line and one latency sample per request.

    Latency runs to the start of the response (headers sent), so a long
    streamed download counts as fast as it began, not as its size."""

    def __init__(self, app: FastAPI, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.bounded = BodyLimit(app)  # bodies read whole are bounded (413); file bytes stream to disk
        self.store = app.state.store
        self.state = app.state  # what tests and `serve` reach through

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = [500]
        first = [None]
        body = [0]

        async def receiving():
            message = await receive()
            body[0] += len(message.get("body", b""))
            return message

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                first[0] = time.perf_counter() - began
            await send(message)

        try:
            if not await gate_pages(self.store, scope, receiving, sending):  # the console, with auth on: signed-in users (pages check roles)
                await self.bounded(scope, receiving, sending)
        finally:
            state = scope.get("state") or {}
            if state.get("audited") and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
                await self._audit(scope, state.get("user"), status[0])
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = first[0] if first[0] is not None else time.perf_counter() - began
            self.metrics.observe_request(scope["method"], route, status[0], seconds)
            if body[0]:
                self.metrics.received.labels(scope["method"], route).inc(body[0])
            log_event("request", method=scope["method"], path=scope["path"], route=route, status=status[0],
                      ms=round(seconds * 1000, 2), client=(scope.get("client") or ("?",))[0])


    async def _audit(self, scope, who, status: int) -> None:
        """The audit row of a write (refused ones too), once the answer is out."""
        from starlette.concurrency import run_in_threadpool

        try:
            await run_in_threadpool(self.store.auth.audit, who, f"{scope['method']} {scope['path']}",
                                    scope.get("query_string", b"").decode("latin-1"), status)
        except Exception as e:  # the answer is out; a failed audit write is the operator's to see
            log_event("audit.error", error=f"{type(e).__name__}: {e}", path=scope["path"])


def _warm(store) -> None:
    """Build the Store's parts once, before threads race to build them lazily."""
    for part in ("repos", "commits", "files", "waves", "jobs", "cron", "secrets", "pipelines", "provenance", "history", "auth"):
        getattr(store, part)


def _version() -> str:
    from ..cli import version

    return version()
