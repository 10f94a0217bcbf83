"""Auth: users, tokens, per-repo roles, pipeline creators' rights and the audit log.

Roles are Pachyderm's RBAC, per repo: a `reader` reads a repo (its commits,
files, provenance and, for a pipeline's output repo, the pipeline and its
jobs), a `writer` also writes it, an `owner` also manages it (deletes it or
its commits, grants roles on it, updates, stops or deletes its pipeline).
An `admin` may do everything, and alone manages users and secrets.  A
pipeline's jobs act with its creator's rights: a creator who lost read on
an input leaves the pipeline's next jobs unrunnable, saying why.

Auth is on once the store has a user (`activate` makes the first, an admin).
Before that `dpl serve` answers everyone, and only on loopback.  The embedded
Store acts as admin: whoever can open the store's files holds its data anyway.

A token is `dpl_<id>_<secret>`.  Its row holds the id and the scrypt hash of
the secret, never the token; scrypt costs ~50 ms, so a server remembers, per
token row, the SHA-256 of the secret it verified (a revoked row is gone from
the next request's lookup, so revocation is immediate).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from ..storage.errors import DplError, InvalidName
from ..storage.metadata import auth as rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.db import Database

ROLES = ("reader", "writer", "owner")
_RANK = {r: i for i, r in enumerate(ROLES)}
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}
_S3_KEY = "auth.s3_key"  # the meta row holding the key S3 secret keys derive from


class Unauthenticated(DplError):
    http_status = 401


class Forbidden(DplError):
    http_status = 403


class UserNotFound(DplError):
    http_status = 404


class UserExists(DplError):
    http_status = 409


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    name: str
    admin: bool


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_.-@" for c in name):
        raise InvalidName(f"User name {name!r} is not valid.", hint="Use letters, digits, '_', '.', '-' and '@' (at most 64).")
    return name


def _hash(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 << 20, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def _matches(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 << 20)
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(got.hex(), digest)


def split_token(token: str) -> tuple[str, str] | None:
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != "dpl" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class Auth:
    def __init__(self, db: Database):
        self.db = db
        self._verified: dict[tuple[str, str], bytes] = {}  # (token id, stored hash) -> sha256 of its secret
        self._lock = threading.Lock()
        self._on = False

    # ------------------------------------------------------------ users

    def active(self) -> bool:
        # Once on, auth stays on (the last admin cannot be deleted): only "off" is asked again.
        if not self._on:
            self._on = rows.any_user(self.db)
        return self._on

    def activate(self, name: str = "admin") -> dict:
        """Turn auth on: the first user, an admin, and a token for it (shown once)."""
        if self.active():
            raise DplError("Auth is already on for this store.", hint="Create users with `dpl auth create-user` (as an admin).")
        self.create_user(name, admin=True)
        return self.create_token(name, description="made by dpl auth activate")

    def create_user(self, name: str, *, admin: bool = False) -> dict:
        user = rows.User(_check_name(name), admin, time.time())
        with self.db.write() as tx:
            if not rows.insert_user(tx, user):
                raise UserExists(f"User {name!r} already exists.", hint="See `dpl auth list-users`.")
        return {"name": user.name, "admin": user.admin, "created": user.created}

    def delete_user(self, name: str) -> None:
        with self.db.write() as tx:
            user = rows.get_user(tx, name)
            if user is None:
                raise UserNotFound(f"User {name!r} does not exist.", hint="See `dpl auth list-users`.")
            if user.admin and rows.admins(tx) == [name]:
                raise DplError(f"User {name!r} is the last admin; deleting them would lock everyone out.",
                               hint="Make another admin first (`dpl auth create-user NAME --admin`).")
            rows.delete_user(tx, name)

    def list_users(self) -> list[dict]:
        tokens: dict[str, int] = {}
        for t in rows.tokens_of(self.db, None):
            tokens[t.user] = tokens.get(t.user, 0) + 1
        return [{"name": u.name, "admin": u.admin, "created": u.created, "tokens": tokens.get(u.name, 0),
                 "roles": rows.roles_of_user(self.db, u.name)} for u in rows.users(self.db)]

    def user(self, name: str) -> rows.User:
        user = rows.get_user(self.db, name)
        if user is None:
            raise UserNotFound(f"User {name!r} does not exist.", hint="See `dpl auth list-users`.")
        return user

    # ----------------------------------------------------------- tokens

    def create_token(self, user: str | None, *, description: str = "", expires_in: float | None = None) -> dict:
        """A new token for `user`: the only time it is seen in clear."""
        if user is None:
            raise DplError("Say whose token to make.", hint="Pass --user NAME.")
        self.user(user)
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
        now = time.time()
        row = rows.Token(token_id, user, _hash(secret), description, now, now + expires_in if expires_in else None)
        with self.db.write() as tx:
            rows.insert_token(tx, row)
        return {"token": f"dpl_{token_id}_{secret}", "id": token_id, "user": user, "expires": row.expires,
                "s3_access_key": token_id, "s3_secret_key": self.s3_secret(token_id)}

    def list_tokens(self, user: str | None) -> list[dict]:
        return [{"id": t.id, "user": t.user, "description": t.description, "created": t.created, "expires": t.expires}
                for t in rows.tokens_of(self.db, user)]

    def revoke_token(self, token_id: str, *, by: Principal | None = None) -> None:
        token_id = split_token(token_id)[0] if split_token(token_id) else token_id
        row = rows.get_token(self.db, token_id)
        if row is None or (by is not None and not by.admin and row.user != by.name):
            raise DplError(f"No token {token_id!r} of yours exists.", hint="See `dpl auth list-tokens`.")
        with self.db.write() as tx:
            rows.delete_token(tx, token_id)

    def authenticate(self, token: str | None) -> Principal:
        """The user a token belongs to; `Unauthenticated` (401) for none, a wrong one or an expired one."""
        if not token:
            raise Unauthenticated("This dpl server needs a token, and the request had none.",
                                  hint="Log in with `dpl auth login` (or set DPL_TOKEN); an admin makes tokens with `dpl auth create-token`.")
        parts = split_token(token)
        row = rows.get_token(self.db, parts[0]) if parts else None
        if row is None or not self._verify(row, parts[1]):
            raise Unauthenticated("The token is not valid on this server (wrong, or revoked).", hint="Log in again with `dpl auth login`.")
        if row.expires is not None and row.expires < time.time():
            raise Unauthenticated("The token has expired.", hint="Ask for a new one (`dpl auth create-token`) and `dpl auth login` with it.")
        user = rows.get_user(self.db, row.user)
        if user is None:
            raise Unauthenticated(f"The token's user {row.user!r} no longer exists.", hint="Ask an admin for an account.")
        return Principal(user.name, user.admin)

    def _verify(self, row: rows.Token, secret: str) -> bool:
        quick = hashlib.sha256(secret.encode()).digest()
        key = (row.id, row.hash)
        with self._lock:
            known = self._verified.get(key)
        if known is not None:
            return hmac.compare_digest(known, quick)
        if not _matches(secret, row.hash):
            return False
        with self._lock:
            self._verified[key] = quick
        return True

    # --------------------------------------------------- S3 gateway keys

    def s3_secret(self, token_id: str) -> str:
        """The S3 secret key of a token: derived from a key the metadata keeps, so no token is needed to check SigV4."""
        row = self.db.one("SELECT value FROM meta WHERE key=?", (_S3_KEY,))
        if row is None:
            with self.db.write() as tx:
                tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (_S3_KEY, secrets.token_hex(32)))
            row = self.db.one("SELECT value FROM meta WHERE key=?", (_S3_KEY,))
        return hmac.new(bytes.fromhex(row["value"]), token_id.encode(), hashlib.sha256).hexdigest()[:40]

    def user_for_access_key(self, access_key: str) -> tuple[Principal, str] | None:
        """(user, secret key) of an S3 access key (a token's id), for the S3 gateway's SigV4 check; None if unknown or expired."""
        row = rows.get_token(self.db, access_key)
        if row is None or (row.expires is not None and row.expires < time.time()):
            return None
        user = rows.get_user(self.db, row.user)
        return (Principal(user.name, user.admin), self.s3_secret(access_key)) if user else None

    # ------------------------------------------------------------ roles

    def role_of(self, who: Principal | None, repo: str) -> str | None:
        """`owner` for admins and the embedded store (None), else the user's role on the repo."""
        if who is None or who.admin:
            return "owner"
        return rows.role(self.db, repo, who.name)

    def require(self, who: Principal | None, repo: str, role: str, doing: str) -> None:
        """Refuse (403) unless `who` holds `role` (or a higher one) on `repo`; the sentence names the role missing."""
        held = self.role_of(who, repo)
        if held is not None and _RANK[held] >= _RANK[role]:
            return
        having = f"they have {held}" if held else "they have no role on it"
        raise Forbidden(f"User {who.name!r} needs the {role} role on repo {repo!r} to {doing}; {having}.",
                        hint=f"An owner of {repo!r} or an admin can grant it: `dpl auth grant {who.name} {role} {repo}`.")

    def require_admin(self, who: Principal | None, doing: str) -> None:
        if who is not None and not who.admin:
            raise Forbidden(f"User {who.name!r} needs the admin role to {doing}.", hint="Ask an admin to do it.")

    def readable(self, who: Principal | None, names):
        """The names of repos in `names` that `who` may read."""
        if who is None or who.admin:
            return set(names)
        mine = rows.roles_of_user(self.db, who.name)
        return {n for n in names if n in mine}

    def grant(self, repo: str, user: str, role: str, *, by: Principal | None = None) -> dict:
        if role not in _RANK:
            raise DplError(f"{role!r} is not a role.", hint=f"Roles are {', '.join(ROLES)} (and admin, a user flag).")
        if by is not None:
            self.require(by, repo, "owner", "grant roles on it")
        self.user(user)
        if not repo_rows.exists(self.db, repo):
            from ..storage.errors import RepoNotFound

            raise RepoNotFound(f"Repo {repo!r} does not exist.", hint="See `dpl list-repo`.")
        with self.db.write() as tx:
            rows.set_role(tx, repo, user, role)
        return {"repo": repo, "user": user, "role": role}

    def revoke(self, repo: str, user: str, *, by: Principal | None = None) -> None:
        if by is not None:
            self.require(by, repo, "owner", "revoke roles on it")
        with self.db.write() as tx:
            if not rows.delete_role(tx, repo, user):
                raise DplError(f"User {user!r} has no role on repo {repo!r}.", hint=f"See `dpl auth list-roles {repo}`.")

    def roles(self, repo: str) -> list[dict]:
        return [{"repo": r.repo, "user": r.user, "role": r.role} for r in rows.roles_on_repo(self.db, repo)]

    def whoami(self, who: Principal | None = None) -> dict:
        if who is None:
            return {"user": None, "admin": True, "roles": {}, "auth": self.active()}
        return {"user": who.name, "admin": who.admin, "roles": rows.roles_of_user(self.db, who.name), "auth": True}

    # ------------------------------------------- repos and pipelines made

    def repo_created(self, repo: str, who: Principal | None) -> None:
        """A new repo belongs to its maker; roles a deleted repo of that name left do not carry over."""
        with self.db.write() as tx:
            rows.forget_repo(tx, repo)
            if who is not None:
                rows.set_role(tx, repo, who.name, "owner")

    def repos_deleted(self, repos) -> None:
        with self.db.write() as tx:
            for repo in repos:
                rows.forget_repo(tx, repo)

    def check_pipeline(self, who: Principal | None, text: str, *, update: bool) -> None:
        """Refuse a spec `who` may not create (or update): reading every input, owning the pipeline it replaces,
        and being admin to hand a step a secret (its code could print it into an output)."""
        if who is None or who.admin:
            return
        from . import spec as specs

        spec = specs.load_spec(text)
        if update:
            self.require(who, spec.name, "owner", f"update pipeline {spec.name!r}")
        cron = {ci.repo for ci in spec.cron_inputs()}
        for repo, _ in spec.input_repos():
            if repo not in cron:
                self.require(who, repo, "reader", "create a pipeline reading it")
        if spec.transform.get("secrets"):
            self.require_admin(who, "create a pipeline that reads secrets")

    def pipeline_created(self, text: str, who: Principal | None) -> None:
        """The creator owns the output repo (and cron repos nobody else holds) and lends the pipeline their rights."""
        if who is None:
            return
        from . import spec as specs

        spec = specs.load_spec(text)
        with self.db.write() as tx:
            rows.set_creator(tx, spec.name, who.name)
            rows.set_role(tx, spec.name, who.name, "owner")
            for ci in spec.cron_inputs():
                if not rows.roles_on_repo(tx, ci.repo):
                    rows.set_role(tx, ci.repo, who.name, "owner")

    def gate_jobs(self) -> list[tuple[str, str, str]]:
        """Mark unrunnable every waiting job whose pipeline's creator may no longer read one of its inputs;
        (pipeline, job, reason) of each."""
        from . import failures

        creators = rows.creators(self.db)
        if not creators:
            return []
        marked = []
        with self.db.write() as tx:
            for job in job_rows.unfinished(tx):
                if job.state != "created" or job.pipeline not in creators:
                    continue
                why = self._refusal(tx, job.pipeline, job.id, creators[job.pipeline])
                if why is None:
                    continue
                now = time.time()
                pipeline = pipeline_rows.get(tx, job.pipeline)
                output = failures.record_failed_output(tx, job.pipeline, job.id, pipeline.output_branch, why, now) if pipeline else None
                job_rows.mark_unrunnable(tx, job.pipeline, job.id, now, why, output)
                marked.append((job.pipeline, job.id, why))
        return marked

    def job_refusal(self, pipeline: str, job_id: str) -> str | None:
        """Why a job may not run with its pipeline's creator's rights, if it may not (checked again as it starts:
        a job that began after the last `gate_jobs` must not slip through)."""
        creator = rows.creators(self.db).get(pipeline)
        return self._refusal(self.db, pipeline, job_id, creator) if creator is not None else None

    @staticmethod
    def _refusal(tx, pipeline: str, job_id: str, creator: str) -> str | None:
        user = rows.get_user(tx, creator)
        if user is not None and user.admin:
            return None
        mine = rows.roles_of_user(tx, creator) if user is not None else {}
        lost = [i.repo for i in pipeline_rows.inputs(tx, pipeline) if i.repo not in mine]
        if not lost:
            return None
        return (f"Job {job_id[:12]} of pipeline {pipeline!r} is unrunnable: its creator {creator!r} "
                + ("no longer exists." if user is None else f"lost the reader role on input repo {lost[0]!r}."))

    # ------------------------------------------------------------ audit

    def audit(self, who: Principal | None, action: str, target: str, status: int) -> None:
        now = time.time()
        entry = rows.AuditEntry(f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", now, who.name if who else None, action, target, status)
        with self.db.write() as tx:
            rows.record(tx, entry)

    def audit_log(self, *, user: str | None = None, since: float | None = None, limit: int = 1000) -> list[dict]:
        return [{"at": e.at, "user": e.user, "action": e.action, "target": e.target, "status": e.status}
                for e in rows.audit_log(self.db, user=user, since=since, limit=limit)]
