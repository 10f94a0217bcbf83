"""/api/v1 for access control: who am I, users, tokens, roles on a repo, the audit log.

Each handler is one `Store.auth` call; `guard.RULES` says who may call it
(users, the audit log: admins; roles: the repo's owners; tokens: their user
or an admin).
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Body, Depends, Request

from .guard import guard, user
from .wire import page

router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])


def _auth(request: Request):
    return request.app.state.store.auth


@router.get("/auth/whoami", tags=["auth"])
def whoami(request: Request):
    return _auth(request).whoami(user(request))


@router.get("/auth/users", tags=["auth"])
def list_users(request: Request, limit: Optional[int] = None, cursor: Optional[str] = None):
    return page(_auth(request).list_users(), limit, cursor)


@router.post("/auth/users", tags=["auth"], status_code=201)
def create_user(request: Request, name: str = Body(...), admin: bool = Body(False)):
    return _auth(request).create_user(name, admin=admin)


@router.delete("/auth/users/{name}", tags=["auth"], status_code=204)
def delete_user(request: Request, name: str):
    _auth(request).delete_user(name)


@router.get("/auth/tokens", tags=["auth"])
def list_tokens(request: Request, user_name: Optional[str] = None):
    """Your tokens (an admin: anyone's, or every token); ids and dates, never a token."""
    who = user(request)
    if who is not None and not who.admin:
        user_name = who.name
    return _auth(request).list_tokens(user_name)


@router.post("/auth/tokens", tags=["auth"], status_code=201)
def create_token(request: Request, user_name: Optional[str] = Body(None, alias="user"), description: str = Body(""),
                 expires_in: Optional[float] = Body(None)):
    """A new token (for yourself; an admin may make one for anyone): the only answer that shows it."""
    who = user(request)
    auth = _auth(request)
    name = user_name or (who.name if who else None)
    if name is None:
        from ..storage.errors import DplError

        raise DplError("Say which user the token is for.", hint="Send {\"user\": NAME}.")
    if who is not None and name != who.name:
        auth.require_admin(who, "make tokens for other users")
    return auth.create_token(name, description=description, expires_in=expires_in)


@router.delete("/auth/tokens/{token_id}", tags=["auth"], status_code=204)
def revoke_token(request: Request, token_id: str):
    _auth(request).revoke_token(token_id, by=user(request))


@router.get("/auth/audit", tags=["auth"])
def audit(request: Request, user_name: Optional[str] = None, since: Optional[float] = None, limit: int = 1000):
    """Writes, newest first: who, what (method, path and query), when, and the answer's status."""
    return _auth(request).audit_log(user=user_name, since=since, limit=min(max(limit, 1), 10_000))


@router.get("/repos/{repo}/roles", tags=["auth"])
def list_roles(request: Request, repo: str):
    return _auth(request).roles(repo)


@router.put("/repos/{repo}/roles/{user_name}", tags=["auth"])
def grant(request: Request, repo: str, user_name: str, role: str = Body(..., embed=True)):
    return _auth(request).grant(repo, user_name, role)


@router.delete("/repos/{repo}/roles/{user_name}", tags=["auth"], status_code=204)
def revoke(request: Request, repo: str, user_name: str):
    _auth(request).revoke(repo, user_name)
