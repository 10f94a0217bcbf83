"""Secrets: the `secrets` table.

A secret is a name and a set of key/value pairs.  They live in the metadata
database rather than in files beside it so that a store shared over
PostgreSQL has one set of secrets, and so that no secret is a file a step's
sandbox would have to hide.  The values leave this module only for the job
runner (which hands them to a step, and scrubs them from every log).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .db import Row, Tx


@dataclass
class Secret:
    name: str
    created: float
    data: dict[str, str]  # key -> value

    @property
    def keys(self) -> list[str]:
        return sorted(self.data)

    @classmethod
    def from_row(cls, row: Row) -> "Secret":
        return cls(row["name"], row["created"], json.loads(row["data"]))


def get(tx: Tx, name: str) -> Secret | None:
    row = tx.one("SELECT name, created, data FROM secrets WHERE name=?", (name,))
    return Secret.from_row(row) if row is not None else None


def list_all(tx: Tx) -> list[Secret]:
    return [Secret.from_row(r) for r in tx.all("SELECT name, created, data FROM secrets ORDER BY name")]


def insert(tx: Tx, secret: Secret, *, overwrite: bool = False) -> bool:
    """Store a secret; False when one of that name exists (and `overwrite` is not given)."""
    data = json.dumps(dict(sorted(secret.data.items())))
    if overwrite:
        tx.execute(
            "INSERT INTO secrets (name, created, data) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET created=excluded.created, data=excluded.data",
            (secret.name, secret.created, data),
        )
        return True
    cur = tx.execute("INSERT INTO secrets (name, created, data) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                     (secret.name, secret.created, data))
    return cur.rowcount == 1


def delete(tx: Tx, name: str) -> bool:
    """Delete a secret; False when there was none."""
    return tx.execute("DELETE FROM secrets WHERE name=?", (name,)).rowcount == 1


def values(tx: Tx) -> list[str]:
    """Every value of every secret, longest first (so that scrubbing one never leaves part of a longer one)."""
    found = {v for r in tx.all("SELECT data FROM secrets") for v in json.loads(r["data"]).values() if v}
    return sorted(found, key=lambda v: (-len(v), v))
