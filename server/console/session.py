"""Who is looking, and the same roles as the API.

While the store has no user (auth off, loopback only) everyone may read and
write.  Once auth is on, a browser holds its token in the HttpOnly,
SameSite=Strict `dpl_token` cookie (set by visiting any page with
`?token=...`, see guard.gate_pages, which admits any signed-in user).  `CookieAuth` turns that cookie into the bearer header the API's
guard reads, so the page's own API calls (the job's events, a download,
stop and start) pass the guard, its role checks and its audit log exactly
as the CLI's do: the console grants nothing the API would not.  Pages
check the reader role on the repo they show (the DAG and search show only
readable repos); `can_write` says whether to draw a write button
(the owner role on a pipeline's repo, as stop and start need).
"""

from __future__ import annotations

from fastapi import Request

from ..guard import bearer

COOKIE = "dpl_token"
_UNKNOWN = object()


class CookieAuth:
    """ASGI: a request with the console's cookie and no Authorization header gets it as a bearer token."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            if not any(k == b"authorization" for k, _ in headers):
                token = _cookie(headers)
                if token:
                    scope = {**scope, "headers": [*headers, (b"authorization", b"Bearer " + token.encode("latin-1"))]}
        await self.app(scope, receive, send)


def _cookie(headers) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE and value:
                    return value
    return None


def principal(request: Request):
    """The user looking (None while auth is off); Unauthenticated (401) without a valid token."""
    who = getattr(request.state, "console_user", _UNKNOWN)
    if who is _UNKNOWN:
        auth = request.app.state.store.auth
        who = request.state.console_user = auth.authenticate(bearer(request)) if auth.active() else None
    return who


def require_read(request: Request, repo: str) -> None:
    who = principal(request)
    if who is not None:
        request.app.state.store.auth.require(who, repo, "reader", "read it")


def readable(request: Request, names) -> set:
    who = principal(request)
    return set(names) if who is None else request.app.state.store.auth.readable(who, names)


def can_write(request: Request, repo: str | None = None, role: str = "owner") -> bool:
    """Whether to draw a write button acting on `repo` (the API refuses the write anyway if not)."""
    who = principal(request)
    if who is None:
        return True
    held = request.app.state.store.auth.role_of(who, repo) if repo else ("owner" if who.admin else None)
    return held is not None and ["reader", "writer", "owner"].index(held) >= ["reader", "writer", "owner"].index(role)
