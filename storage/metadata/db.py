"""What every metadata backend offers: transactions that run SQL.

The table-group modules beside this one (`repos`, `commits`, `pipelines`,
`jobs`, `datums`, `secrets`) are the only code that writes SQL.  Each of their
functions takes a `Tx` as its first argument, as Pachyderm's
`pfsdb.GetCommit(ctx, tx, id)` does, and returns typed rows (dataclasses):

    with db.write() as tx:                      # one atomic transaction
        head = repos.branch_head(tx, "images", "master")
        commits.insert(tx, commit)
    commit = commits.get(db, "images", head)    # a read outside a transaction

A `Database` is itself a `Tx` whose statements autocommit, so reads need no
ceremony.  The SQL they write is the portable subset SQLite and PostgreSQL
share (`?` placeholders, `INSERT ... ON CONFLICT`); the PostgreSQL backend
adapts the placeholders.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Protocol

Row = Mapping[str, Any]  # a result row, read by column name


class Tx:
    """Run statements: inside a `write()` transaction, or autocommitted reads."""

    def execute(self, sql: str, args=()) -> Any:
        """Run one statement; the result has fetchone(), fetchall(), rowcount."""
        raise NotImplementedError

    def executemany(self, sql: str, rows) -> None:
        raise NotImplementedError

    def one(self, sql: str, args=()) -> Row | None:
        return self.execute(sql, args).fetchone()

    def all(self, sql: str, args=()) -> list[Row]:
        return self.execute(sql, args).fetchall()

    # The name engine code used before the typed layer; kept while it moves over.
    def query(self, sql: str, args=()) -> list[Row]:
        return self.all(sql, args)


class Database(Protocol):
    """A metadata backend: `SqliteDatabase` or `PostgresDatabase`."""

    dialect: str  # "sqlite" or "postgresql"
    url: str

    def write(self) -> contextlib.AbstractContextManager[Tx]:
        """One atomic read-modify-write transaction; writers are serialised."""

    def one(self, sql: str, args=()) -> Row | None: ...

    def all(self, sql: str, args=()) -> list[Row]: ...

    def close(self) -> None: ...


def not_utf8(e: UnicodeEncodeError):
    """A name that is no text (undecodable bytes in a command-line argument)
    can name nothing stored: say so instead of failing in the database."""
    from ..errors import InvalidRef

    return InvalidRef(f"{e.object!r} is not valid UTF-8 text, so it names nothing in the store.", hint="Check the name for stray bytes.")


def is_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def open_database(location: str) -> Database:
    """The metadata database at `location`: a PostgreSQL URL, or a SQLite file path."""
    if is_url(location):
        try:
            from .postgres import PostgresDatabase
        except ImportError as e:
            from ..errors import StorageUnavailable

            raise StorageUnavailable(
                f"PostgreSQL metadata needs psycopg ({e.name} is not installed).", hint="pip install 'dpl[postgres]'."
            ) from None
        return PostgresDatabase(location)
    from .sqlite import SqliteDatabase

    return SqliteDatabase(location)


