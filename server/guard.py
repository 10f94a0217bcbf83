"""Who may call what: the one check every /api/v1 request passes (a router dependency).

Each route names the role it needs and where its repo comes from, in
`RULES`; a route missing from the table is for admins only, so a route
added without a rule fails closed (tests/test_auth.py checks every route has
one).  The few routes whose repos are in the body or in the answer (create
a pipeline, list repos) are `ANY` here and checked by the handler through
the same `Auth` calls.  While the store has no user, everyone is let in (the
server then listens only on loopback).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..storage.errors import DplError

ANY = "any"  # any signed-in user (the handler may check more)
ADMIN = "admin"


@dataclass(frozen=True)
class Role:
    role: str  # reader, writer or owner
    doing: str  # "... to <doing>"
    where: str = "repo"  # a path parameter, "query:NAME", or "job" (the pipeline of the job in the path)
    also: str | None = None  # a second repo, from a query parameter, needing the same role when given


R = "/api/v1"
RULES: dict[tuple[str, str], object] = {
    ("GET", f"{R}/repos"): ANY,
    ("POST", f"{R}/repos"): ANY,
    ("GET", f"{R}/repos/{{repo}}"): Role("reader", "read it"),
    ("DELETE", f"{R}/repos/{{repo}}"): Role("owner", "delete it"),
    ("GET", f"{R}/repos/{{repo}}/branches"): Role("reader", "read it"),
    ("PUT", f"{R}/repos/{{repo}}/branches/{{branch}}"): Role("writer", "create branches in it"),
    ("DELETE", f"{R}/repos/{{repo}}/branches/{{branch}}"): Role("writer", "delete branches of it"),
    ("GET", f"{R}/repos/{{repo}}/commits"): Role("reader", "read it"),
    ("POST", f"{R}/repos/{{repo}}/commits"): Role("writer", "start commits in it"),
    ("GET", f"{R}/repos/{{repo}}/commits/{{ref}}"): Role("reader", "read it"),
    ("GET", f"{R}/repos/{{repo}}/resolve"): Role("reader", "read it"),
    ("POST", f"{R}/repos/{{repo}}/commits/{{ref}}/finish"): Role("writer", "finish commits in it"),
    ("DELETE", f"{R}/repos/{{repo}}/commits/{{ref}}"): Role("owner", "delete its commits"),
    ("POST", f"{R}/repos/{{repo}}/commits/{{ref}}/squash"): Role("owner", "squash its commits"),
    ("GET", f"{R}/repos/{{repo}}/commits/{{ref}}/provenance"): Role("reader", "read its provenance"),
    ("GET", f"{R}/repos/{{repo}}/commits/{{ref}}/origins"): Role("reader", "read its provenance"),
    ("GET", f"{R}/commits/{{commit_id}}"): ANY,
    ("GET", f"{R}/repos/{{repo}}/files"): Role("reader", "read it"),
    ("GET", f"{R}/repos/{{repo}}/glob"): Role("reader", "read it"),
    ("GET", f"{R}/repos/{{repo}}/diff"): Role("reader", "read it", also="other_repo"),
    ("GET", f"{R}/repos/{{repo}}/file"): Role("reader", "read it"),
    ("GET", f"{R}/repos/{{repo}}/inspect-file"): Role("reader", "read it"),
    ("POST", f"{R}/repos/{{repo}}/copy"): Role("writer", "copy files into it"),  # and reader on src_repo, checked by the handler
    ("GET", f"{R}/repos/{{repo}}/branches/{{branch}}"): Role("reader", "read it"),
    ("PUT", f"{R}/repos/{{repo}}/branches/{{branch}}/trigger"): Role("writer", "create branches in it"),
    ("POST", f"{R}/pipelines/validate"): ANY,
    ("POST", f"{R}/pipelines/{{name}}/edit"): Role("owner", "edit its pipeline", "name"),
    ("GET", f"{R}/repos/{{repo}}/content"): Role("reader", "read it"),
    ("PUT", f"{R}/repos/{{repo}}/content"): Role("writer", "put files into it"),
    ("POST", f"{R}/repos/{{repo}}/upload"): Role("writer", "put files into it"),
    ("DELETE", f"{R}/repos/{{repo}}/content"): Role("writer", "delete files from it"),
    ("POST", f"{R}/repos/{{repo}}/chunks/missing"): Role("writer", "put files into it"),
    ("POST", f"{R}/repos/{{repo}}/chunks"): Role("writer", "put files into it"),
    ("POST", f"{R}/repos/{{repo}}/land"): Role("writer", "put files into it"),
    ("GET", f"{R}/repos/{{repo}}/roles"): Role("reader", "read it"),
    ("PUT", f"{R}/repos/{{repo}}/roles/{{user_name}}"): Role("owner", "grant roles on it"),
    ("DELETE", f"{R}/repos/{{repo}}/roles/{{user_name}}"): Role("owner", "revoke roles on it"),
    # pipelines: a pipeline is read and managed through its output repo, of its name
    ("GET", f"{R}/pipelines"): ANY,
    ("POST", f"{R}/pipelines"): ANY,
    ("PUT", f"{R}/pipelines"): ANY,
    ("GET", f"{R}/pipelines/{{name}}"): Role("reader", "read its pipeline", "name"),
    ("DELETE", f"{R}/pipelines/{{name}}"): Role("owner", "delete its pipeline", "name"),
    ("POST", f"{R}/pipelines/{{name}}/stop"): Role("owner", "stop its pipeline", "name"),
    ("POST", f"{R}/pipelines/{{name}}/start"): Role("owner", "start its pipeline", "name"),
    ("GET", f"{R}/pipelines/{{name}}/wave"): Role("reader", "read its pipeline", "name"),
    ("POST", f"{R}/pipelines/{{name}}/cron"): Role("owner", "tick its pipeline's cron inputs", "name"),
    ("GET", f"{R}/jobs"): ANY,
    ("GET", f"{R}/jobs/{{job}}"): Role("reader", "read its jobs", "job"),
    ("GET", f"{R}/jobs/{{job}}/events"): Role("reader", "read its jobs", "job"),
    ("GET", f"{R}/jobs/{{job}}/why"): Role("reader", "read its jobs", "job"),
    ("GET", f"{R}/jobs/{{job}}/datums"): Role("reader", "read its jobs", "job"),
    ("GET", f"{R}/jobs/{{job}}/datums/{{datum}}"): Role("reader", "read its jobs", "job"),
    ("GET", f"{R}/jobs/{{job}}/logs"): Role("reader", "read its jobs' logs", "job"),
    ("POST", f"{R}/jobs/{{job}}/stop"): Role("owner", "stop its jobs", "job"),
    ("DELETE", f"{R}/jobs/{{job}}"): Role("owner", "delete its jobs", "job"),
    ("POST", f"{R}/jobs/{{job}}/restart"): Role("owner", "restart its datums", "job"),
    ("POST", f"{R}/pipelines/{{name}}/rerun"): Role("owner", "rerun its pipeline", "name"),
    ("GET", f"{R}/provenance"): Role("reader", "read its provenance", "query:repo"),
    ("GET", f"{R}/subvenance"): Role("reader", "read its subvenance", "query:repo"),
    ("GET", f"{R}/dag"): ANY,
    # secrets: a step can print what it is handed, so only admins manage them
    ("GET", f"{R}/secrets"): ADMIN,
    ("POST", f"{R}/secrets"): ADMIN,
    ("GET", f"{R}/secrets/{{name}}"): ADMIN,
    ("DELETE", f"{R}/secrets/{{name}}"): ADMIN,
    # auth itself
    ("GET", f"{R}/auth/whoami"): ANY,
    ("GET", f"{R}/auth/users"): ADMIN,
    ("POST", f"{R}/auth/users"): ADMIN,
    ("DELETE", f"{R}/auth/users/{{name}}"): ADMIN,
    ("GET", f"{R}/auth/tokens"): ANY,
    ("POST", f"{R}/auth/tokens"): ANY,
    ("DELETE", f"{R}/auth/tokens/{{token_id}}"): ANY,
    ("GET", f"{R}/auth/audit"): ADMIN,
}


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    kind, _, value = header.partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


async def guard(request: Request) -> None:
    """Authenticate the request and check its route's rule; the user goes to `request.state.user`."""
    from starlette.concurrency import run_in_threadpool

    store = request.app.state.store
    request.state.user = None
    # Whether auth is on is one indexed read of a local SQLite file (and, once
    # on, remembered): asked here rather than on a pool thread, so that a
    # server without users (on loopback) spends no thread trip on it.
    on = store.auth.active() if store.db.dialect == "sqlite" else await run_in_threadpool(store.auth.active)
    if on:
        await run_in_threadpool(_check, request, store)


def _check(request: Request, store) -> None:
    auth = store.auth
    request.state.audited = True  # auth is on: the server's wrapper writes this request's audit row if it writes
    who = auth.authenticate(bearer(request))
    request.state.user = who
    route = request.scope.get("route")
    rule = RULES.get((request.method, getattr(route, "path", "")), ADMIN)
    if rule == ANY:
        return
    if rule == ADMIN:
        auth.require_admin(who, f"{request.method} {getattr(route, 'path', request.url.path)}")
        return
    repo = _repo(request, store, rule.where)
    auth.require(who, repo, rule.role, rule.doing)
    other = request.query_params.get(rule.also) if rule.also else None
    if other and other != repo:
        auth.require(who, other, rule.role, rule.doing)


def _repo(request: Request, store, where: str) -> str:
    if where == "job":
        pipeline = request.query_params.get("pipeline")
        return pipeline or store.inspect_job(None, request.path_params["job"])["pipeline"]
    if where.startswith("query:"):
        return request.query_params.get(where[len("query:"):], "")
    return request.path_params[where]


def user(request: Request):
    """The `Principal` the request acts as (None while auth is off)."""
    return getattr(request.state, "user", None)


# ------------------------------------------------------ pages beyond the API

# The API checks its own requests (above); the probes stay open for operators' tools.
_UNGATED = ("/api/", "/healthz", "/metrics", "/docs", "/openapi.json", "/redoc")


async def gate_pages(store, scope, receive, send) -> bool:
    """With auth on, the pages beyond the API (the console) are for signed-in
    users, whose token comes in the Authorization header or the `dpl_token`
    cookie (`?token=...` on any page sets it).  Each page then checks the
    reader role on the repos it shows (console/session.py), as the API's
    routes do.  True when the request was answered here (refused, or
    redirected to set the cookie)."""
    from http.cookies import SimpleCookie
    from urllib.parse import parse_qsl, urlencode

    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, RedirectResponse

    path = scope.get("path", "")
    if scope["type"] != "http" or path.startswith(_UNGATED) or not await run_in_threadpool(store.auth.active):
        return False
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    given = dict(query).get("token")
    kind, _, value = headers.get("authorization", "").partition(" ")
    cookie = SimpleCookie(headers.get("cookie", "")).get("dpl_token")
    token = given or (value.strip() if kind.lower() == "bearer" else None) or (cookie.value if cookie else None)
    try:
        await run_in_threadpool(store.auth.authenticate, token)
    except DplError as e:
        answer = JSONResponse({"error": e.message, "hint": e.hint, "type": type(e).__name__}, status_code=e.http_status)
        await answer(scope, receive, send)
        return True
    if given:
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        answer = RedirectResponse(path + (f"?{rest}" if rest else ""), status_code=303)
        answer.set_cookie("dpl_token", given, httponly=True, samesite="strict", path="/")
        await answer(scope, receive, send)
        return True
    return False
