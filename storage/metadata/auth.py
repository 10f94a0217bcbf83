"""Access control: the `users`, `tokens`, `roles`, `pipeline_creators` and `audit` tables.

A token row holds only the scrypt hash of the token's secret part; the
public part (`id`) finds the row.  Roles are per repo (reader < writer <
owner); `admin` is a user flag.  Rows are plain data: what a role allows is
engine/auth.py's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Row, Tx


@dataclass
class User:
    name: str
    admin: bool
    created: float

    @classmethod
    def from_row(cls, row: Row) -> "User":
        return cls(row["name"], bool(row["admin"]), row["created"])


@dataclass
class Token:
    id: str
    user: str
    hash: str
    description: str
    created: float
    expires: float | None

    @classmethod
    def from_row(cls, row: Row) -> "Token":
        return cls(row["id"], row["username"], row["hash"], row["description"], row["created"], row["expires"])


@dataclass
class Role:
    repo: str
    user: str
    role: str

    @classmethod
    def from_row(cls, row: Row) -> "Role":
        return cls(row["repo"], row["username"], row["role"])


@dataclass
class AuditEntry:
    id: str
    at: float
    user: str | None
    action: str
    target: str
    status: int

    @classmethod
    def from_row(cls, row: Row) -> "AuditEntry":
        return cls(row["id"], row["at"], row["username"], row["action"], row["target"], row["status"])


# ------------------------------------------------------------------- users


def any_user(tx: Tx) -> bool:
    return tx.one("SELECT 1 AS x FROM users LIMIT 1") is not None


def get_user(tx: Tx, name: str) -> User | None:
    row = tx.one("SELECT name, admin, created FROM users WHERE name=?", (name,))
    return User.from_row(row) if row is not None else None


def users(tx: Tx) -> list[User]:
    return [User.from_row(r) for r in tx.all("SELECT name, admin, created FROM users ORDER BY name")]


def insert_user(tx: Tx, user: User) -> bool:
    """False when a user of that name exists."""
    cur = tx.execute("INSERT INTO users (name, admin, created) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                     (user.name, int(user.admin), user.created))
    return cur.rowcount == 1


def set_admin(tx: Tx, name: str, admin: bool) -> None:
    tx.execute("UPDATE users SET admin=? WHERE name=?", (int(admin), name))


def admins(tx: Tx) -> list[str]:
    return [r["name"] for r in tx.all("SELECT name FROM users WHERE admin=1 ORDER BY name")]


def delete_user(tx: Tx, name: str) -> None:
    """The user, their tokens and roles (pipelines they created keep their row: their jobs then act with no rights)."""
    tx.execute("DELETE FROM tokens WHERE username=?", (name,))
    tx.execute("DELETE FROM roles WHERE username=?", (name,))
    tx.execute("DELETE FROM users WHERE name=?", (name,))


# ------------------------------------------------------------------ tokens


def insert_token(tx: Tx, token: Token) -> None:
    tx.execute("INSERT INTO tokens (id, username, hash, description, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
               (token.id, token.user, token.hash, token.description, token.created, token.expires))


def get_token(tx: Tx, token_id: str) -> Token | None:
    row = tx.one("SELECT * FROM tokens WHERE id=?", (token_id,))
    return Token.from_row(row) if row is not None else None


def tokens_of(tx: Tx, user: str | None) -> list[Token]:
    """A user's tokens (every token when `user` is None), oldest first."""
    if user is None:
        rows = tx.all("SELECT * FROM tokens ORDER BY created, id")
    else:
        rows = tx.all("SELECT * FROM tokens WHERE username=? ORDER BY created, id", (user,))
    return [Token.from_row(r) for r in rows]


def delete_token(tx: Tx, token_id: str) -> bool:
    return tx.execute("DELETE FROM tokens WHERE id=?", (token_id,)).rowcount == 1


# ------------------------------------------------------------------- roles


def role(tx: Tx, repo: str, user: str) -> str | None:
    row = tx.one("SELECT role FROM roles WHERE repo=? AND username=?", (repo, user))
    return row["role"] if row is not None else None


def roles_of_user(tx: Tx, user: str) -> dict[str, str]:
    """repo -> role, for one user."""
    return {r["repo"]: r["role"] for r in tx.all("SELECT repo, role FROM roles WHERE username=?", (user,))}


def roles_on_repo(tx: Tx, repo: str) -> list[Role]:
    return [Role.from_row(r) for r in tx.all("SELECT repo, username, role FROM roles WHERE repo=? ORDER BY username", (repo,))]


def set_role(tx: Tx, repo: str, user: str, role_name: str) -> None:
    tx.execute("INSERT INTO roles (repo, username, role) VALUES (?, ?, ?) ON CONFLICT (repo, username) DO UPDATE SET role=excluded.role",
               (repo, user, role_name))


def delete_role(tx: Tx, repo: str, user: str) -> bool:
    return tx.execute("DELETE FROM roles WHERE repo=? AND username=?", (repo, user)).rowcount == 1


def forget_repo(tx: Tx, repo: str) -> None:
    """Every role on a repo (it was deleted, or is made anew)."""
    tx.execute("DELETE FROM roles WHERE repo=?", (repo,))


# -------------------------------------------------------- pipeline creators


def set_creator(tx: Tx, pipeline: str, user: str) -> None:
    tx.execute("INSERT INTO pipeline_creators (pipeline, username) VALUES (?, ?) "
               "ON CONFLICT (pipeline) DO UPDATE SET username=excluded.username", (pipeline, user))


def creators(tx: Tx) -> dict[str, str]:
    """pipeline -> the user whose rights its jobs act with."""
    return {r["pipeline"]: r["username"] for r in tx.all("SELECT pipeline, username FROM pipeline_creators")}


# ------------------------------------------------------------------- audit


def record(tx: Tx, entry: AuditEntry) -> None:
    tx.execute("INSERT INTO audit (id, at, username, action, target, status) VALUES (?, ?, ?, ?, ?, ?)",
               (entry.id, entry.at, entry.user, entry.action, entry.target, entry.status))


def audit_log(tx: Tx, *, user: str | None = None, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
    """Newest first."""
    where, args = [], []
    if user is not None:
        where.append("username=?")
        args.append(user)
    if since is not None:
        where.append("at>=?")
        args.append(since)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return [AuditEntry.from_row(r) for r in tx.all(sql, (*args, limit))]
