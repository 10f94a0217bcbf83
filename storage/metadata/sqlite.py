"""The SQLite backend: the embedded default, one file in WAL mode.

WAL lets any number of readers run beside one writer; every change that must
be atomic (moving a branch head, finishing a commit, recording a job) happens
inside one `write()` transaction, which takes the write lock up front
(BEGIN IMMEDIATE) so that a read-modify-write can never interleave with
another writer's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Iterator

from ..errors import Corruption, DiskFull, DplError, StorageUnavailable
from .db import not_utf8 as _not_utf8, Row, Tx
from .schema import MIGRATIONS, SCHEMA_VERSION
from ..turns import turn


class SqliteTx(Tx):
    """A transaction (or, outside `write()`, autocommit reads) on one connection."""

    def __init__(self, conn: sqlite3.Connection, errors):
        self.conn = conn
        self._errors = errors

    def execute(self, sql: str, args=()):
        try:
            return self.conn.execute(sql, args)
        except sqlite3.OperationalError as e:
            raise self._errors(e) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def executemany(self, sql: str, rows) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as e:
            raise self._errors(e) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None


# Whose turn it is to write the database file: writers of this process
# queue on a mutex and processes on an flock of `<database>.writer`
# (storage/turns.py).  SQLite makes a writer that finds the file locked
# sleep and retry (1, 2, 5 ... up to 100 ms a try), so writers racing for it
# waited far longer than the transactions they waited for: 8 threads, or 8
# processes, committed slower than one.  With turns BEGIN IMMEDIATE rarely
# waits.  Another program writing the file still meets SQLite's own lock.


class SqliteDatabase(Tx):
    """Metadata in one SQLite file.  Reads outside `write()` autocommit."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self.url = path
        self._local = threading.local()
        self._writer_key = os.path.realpath(path)
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA busy_timeout=60000")
            except sqlite3.OperationalError as e:
                raise self._storage_error(e) or e
            self._local.conn = conn
        return conn

    # Reads outside a transaction go through a Tx on this thread's connection.
    def execute(self, sql: str, args=()):
        return SqliteTx(self.conn, self._storage_error).execute(sql, args)

    def executemany(self, sql: str, rows) -> None:
        raise TypeError("writes go through `with db.write() as tx:`")

    def _storage_error(self, e: sqlite3.Error) -> DplError | None:
        """The user-facing error for a database that cannot be written (a full
        disk, most often); None for anything else (a bug, to be seen as one)."""
        text = str(e).lower()
        if not any(w in text for w in ("full", "disk i/o", "unable to open", "readonly")):
            return None
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            full = "full" in text or st.f_bavail * st.f_frsize < (1 << 20)
        except OSError:
            full = "full" in text
        if full:
            return DiskFull()
        return StorageUnavailable(f"The metadata database {self.path} cannot be used ({e}).", hint="Check the disk and its permissions.")

    def _migrate(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row and int(row["value"]) == SCHEMA_VERSION:
                return  # the common case takes no write lock
        except sqlite3.OperationalError:
            pass  # a new database: no meta table yet
        with self.write() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = tx.one("SELECT value FROM meta WHERE key='schema_version'")
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise Corruption(
                    f"This store has schema version {version}, newer than this dpl ({SCHEMA_VERSION}).",
                    hint="Upgrade dpl.",
                )
            for i in range(version, SCHEMA_VERSION):
                script = MIGRATIONS[i]
                if i == 0:
                    script = script.replace("CREATE TABLE meta", "CREATE TABLE IF NOT EXISTS meta")
                for statement in script.split(";"):
                    if statement.strip():
                        tx.execute(statement)
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                       (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def write(self) -> Iterator[SqliteTx]:
        """One atomic read-modify-write transaction holding the write lock."""
        conn = self.conn
        with turn(self._writer_key + ".writer"):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise self._storage_error(e) or e
            yield from self._transaction(conn)

    def _transaction(self, conn: sqlite3.Connection) -> Iterator[SqliteTx]:
        try:
            yield SqliteTx(conn, self._storage_error)
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")  # fails only if SQLite already rolled back
            if isinstance(e, sqlite3.OperationalError) and (mapped := self._storage_error(e)):
                raise mapped from None
            if isinstance(e, UnicodeEncodeError):
                raise _not_utf8(e) from None
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise self._storage_error(e) or e

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None



__all__ = ["SqliteDatabase", "Row"]
