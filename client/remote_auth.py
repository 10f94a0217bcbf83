"""`RemoteStore.auth`: what the CLI calls on `Store.auth`, over /api/v1/auth.

The methods take the embedded `Auth`'s arguments; who may call them is the
server's to decide (guard.RULES), so a refusal comes back as the same
`Forbidden` sentence whichever door asked.
"""

from __future__ import annotations

from urllib.parse import quote


def _q(segment: str) -> str:
    return quote(segment, safe="")


class RemoteAuth:
    def __init__(self, remote):
        self.remote = remote

    def active(self) -> bool:
        return bool(self.whoami(None)["auth"])

    def whoami(self, who=None) -> dict:
        return self.remote._get("/auth/whoami")

    def create_user(self, name: str, *, admin: bool = False) -> dict:
        return self.remote._call("POST", "/auth/users", {"name": name, "admin": admin})

    def delete_user(self, name: str) -> None:
        self.remote._call("DELETE", f"/auth/users/{_q(name)}")

    def list_users(self) -> list[dict]:
        return self.remote._all("/auth/users")

    def create_token(self, user: str | None, *, description: str = "", expires_in: float | None = None) -> dict:
        return self.remote._call("POST", "/auth/tokens", {"user": user, "description": description, "expires_in": expires_in})

    def list_tokens(self, user: str | None) -> list[dict]:
        return self.remote._get("/auth/tokens", user_name=user)

    def revoke_token(self, token_id: str, *, by=None) -> None:
        self.remote._call("DELETE", f"/auth/tokens/{_q(token_id)}")

    def grant(self, repo: str, user: str, role: str, *, by=None) -> dict:
        return self.remote._call("PUT", f"/repos/{_q(repo)}/roles/{_q(user)}", {"role": role})

    def revoke(self, repo: str, user: str, *, by=None) -> None:
        self.remote._call("DELETE", f"/repos/{_q(repo)}/roles/{_q(user)}")

    def roles(self, repo: str) -> list[dict]:
        return self.remote._get(f"/repos/{_q(repo)}/roles")

    def audit_log(self, *, user: str | None = None, since: float | None = None, limit: int = 1000) -> list[dict]:
        return self.remote._get("/auth/audit", user_name=user, since=since, limit=limit)
