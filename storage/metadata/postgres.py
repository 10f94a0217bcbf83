"""The PostgreSQL backend: metadata one store shares across machines (psycopg 3).

It behaves as the SQLite backend does, so the table-group modules and the
engine cannot tell them apart:
- writers are serialised: every `write()` transaction takes one advisory lock
  first, as SQLite's BEGIN IMMEDIATE takes the write lock, because the engine's
  read-modify-writes (a branch's compare-and-swap, a job claim) rely on
  nobody writing in between.  Reads never wait (MVCC).
- text compares byte by byte (columns are COLLATE "C"), so id-prefix ranges
  (`id >= ? AND id < ?`) and ORDER BY give SQLite's results.
- statements are written with `?` placeholders; each SQL string is adapted
  once (`_adapt`, cached), including the few SQLite-only forms engine code
  still uses while its SQL moves into the table-group modules.
One connection per thread, in autocommit mode outside `write()`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg.adapt import Dumper, Loader
from psycopg.rows import dict_row
from psycopg.types.numeric import Int8Dumper

from ..errors import Corruption, DiskFull, StorageUnavailable
from .db import not_utf8 as _not_utf8, Row, Tx
from .schema import MIGRATIONS, SCHEMA_VERSION

# The advisory lock every writer holds; advisory locks are per database, so
# stores in different databases of one server never wait for each other.
WRITE_LOCK = 0x64706C_6D657461  # "dpl" "meta"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------ SQL adaptation

_LITERAL = re.compile(r"('(?:[^']|'')*'|\"[^\"]*\")")
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*(\(([^)]*)\))?", re.I)
_ROWID_ORDER = re.compile(r",\s*rowid\b", re.I)  # a tie-break on insertion order: created is enough


@functools.lru_cache(maxsize=4096)
def _adapt(sql: str) -> str:
    """`sql` in psycopg's dialect: `%s` placeholders, literal `%` doubled."""
    if _OR_IGNORE.match(sql):
        sql = _OR_IGNORE.sub("INSERT INTO", sql, count=1).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    sql = _ROWID_ORDER.sub("", sql)
    parts = _LITERAL.split(sql)
    # Outside literals `?` is a placeholder; psycopg reads `%` everywhere.
    return "".join(p.replace("%", "%%") if i % 2 else p.replace("%", "%%").replace("?", "%s") for i, p in enumerate(parts))


def _replace_as_upsert(sql: str, m: re.Match, columns_of) -> str:
    """SQLite's REPLACE deletes the conflicting row and inserts the new one:
    an upsert that sets every listed column and resets the others."""
    table = m.group(1)
    key, every = columns_of(table)
    listed = [c.strip() for c in m.group(3).split(",")] if m.group(3) else every
    sets = [f"{c}=EXCLUDED.{c}" if c in listed else f"{c}=DEFAULT" for c in every if c not in key]
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    head = f"INSERT INTO {table}" + (f" ({m.group(3)})" if m.group(3) else "")
    return head + sql[m.end():].rstrip().rstrip(";") + f" ON CONFLICT ({', '.join(key)}) {action}"


def _ddl(script: str) -> list[str]:
    """A migration written for SQLite, as PostgreSQL statements."""
    script = re.sub(r"--[^\n]*", "", script)
    script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)
    script = re.sub(r"\bINTEGER\b", "BIGINT", script)
    script = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', script)
    script = re.sub(r"\)\s*WITHOUT\s+ROWID", ")", script, flags=re.I)
    script = script.replace("CREATE TABLE meta", "CREATE TABLE IF NOT EXISTS meta")
    return [s.strip() for s in script.split(";") if s.strip()]


class _BoolAsInt(Dumper):
    """SQLite stores True as 1; the schema has no boolean columns."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj) -> bytes:
        return b"1" if obj else b"0"


class _Number(Loader):
    """SUM and AVG give `numeric`: read it as SQLite gives it, int or float."""

    def load(self, data) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:  # a fraction, NaN or Infinity
            return float(text)


def _no_nul(args):
    """PostgreSQL text cannot hold NUL; a step's log can.  SQLite keeps it."""
    if any(isinstance(a, str) and "\x00" in a for a in args):
        return [a.replace("\x00", "\ufffd") if isinstance(a, str) else a for a in args]
    return args


# ----------------------------------------------------------------- backend


class PostgresTx(Tx):
    """A transaction (or, outside `write()`, autocommitted statements) on one connection."""

    def __init__(self, db: "PostgresDatabase", conn: psycopg.Connection):
        self._db = db
        self.conn = conn

    def execute(self, sql: str, args=()):
        try:
            return self.conn.execute(self._db._sql(sql), _no_nul(args))
        except psycopg.Error as e:
            raise self._db._storage_error(e, self.conn) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def executemany(self, sql: str, rows) -> None:
        rows = [_no_nul(r) for r in rows]
        if not rows:
            return
        try:
            with self.conn.cursor() as cur:
                cur.executemany(self._db._sql(sql), rows)
        except psycopg.Error as e:
            raise self._db._storage_error(e, self.conn) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None


class PostgresDatabase(Tx):
    """Metadata in a PostgreSQL database, named by a postgresql:// URL."""

    dialect = "postgresql"

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[threading.Thread, psycopg.Connection]] = []
        self._columns: dict[str, tuple[list[str], list[str]]] = {}
        self._upserts: dict[str, str] = {}
        self._migrate()

    # ------------------------------------------------------------ connections

    @property
    def conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _connect(self) -> psycopg.Connection:
        options = {} if "connect_timeout" in self.url else {"connect_timeout": 10}
        try:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, application_name="dpl", **options)
        except psycopg.OperationalError as e:
            raise self._unreachable(e) from None
        except psycopg.ProgrammingError as e:  # a URL libpq cannot parse
            raise StorageUnavailable(
                f"The metadata URL {redact(self.url)} is not a valid PostgreSQL URL ({_first_line(e)}).",
                hint="Write postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE.",
            ) from None
        conn.adapters.register_dumper(int, Int8Dumper)  # never int2 arithmetic that overflows
        conn.adapters.register_dumper(bool, _BoolAsInt)
        conn.adapters.register_loader("numeric", _Number)
        with self._lock:
            # Connections of threads that ended are closed here rather than left to the collector.
            alive = []
            for thread, c in self._conns:
                if thread.is_alive() or thread is threading.current_thread():
                    alive.append((thread, c))
                else:
                    with contextlib.suppress(Exception):
                        c.close()
            self._conns = alive + [(threading.current_thread(), conn)]
        return conn

    def _unreachable(self, e: psycopg.Error) -> StorageUnavailable:
        # libpq says "connection failed: connection to server at ..., port ... failed: FATAL:  why"
        text = _first_line(e).rsplit("failed: ", 1)[-1].replace("FATAL:", "").strip()
        where = redact(self.url)
        if "password" in text or "authentication" in text:
            hint = "Check the user and password in the URL (or PGPASSWORD, ~/.pgpass)."
        elif "does not exist" in text:
            hint = "Create the database first (createdb), or fix its name in the URL."
        else:
            hint = "Check that the server is running and that the host and port in the URL are right."
        return StorageUnavailable(f"The metadata database at {where} could not be reached ({text}).", hint=hint)

    def _storage_error(self, e: psycopg.Error, conn: psycopg.Connection):
        """The user-facing error for a database that cannot be used; None for
        anything else (a bug in a statement, to be seen as one)."""
        if isinstance(e, pgerrors.DiskFull):
            return DiskFull("The disk holding the metadata database is full; nothing was committed.")
        if isinstance(e, psycopg.OperationalError) and (conn.broken or conn.closed):
            if getattr(self._local, "conn", None) is conn:
                self._local.conn = None  # the next statement connects again
            return StorageUnavailable(
                f"The connection to the metadata database at {redact(self.url)} was lost ({_first_line(e)}).",
                hint="Check that the server is running, then run the command again; nothing half-done was committed.",
            )
        if isinstance(e, pgerrors.InsufficientPrivilege):
            return StorageUnavailable(f"The metadata database at {redact(self.url)} refused access ({_first_line(e)}).",
                                      hint="Grant the user in the URL rights on that database.")
        return None

    # --------------------------------------------------------------- statements

    def _sql(self, sql: str) -> str:
        if (m := _OR_REPLACE.match(sql)) is None:
            return _adapt(sql)
        if sql not in self._upserts:  # needs the table's key, from this database's catalog
            self._upserts[sql] = _adapt(_replace_as_upsert(sql, m, self._columns_of))
        return self._upserts[sql]

    def _columns_of(self, table: str) -> tuple[list[str], list[str]]:
        """(primary key, every column) of a table, from the catalog."""
        if table not in self._columns:
            rows = self.conn.execute(
                "SELECT a.attname AS name, a.attnum = ANY(i.indkey) AS key FROM pg_attribute a "
                "JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (table,),
            ).fetchall()
            self._columns[table] = ([r["name"] for r in rows if r["key"]], [r["name"] for r in rows])
        return self._columns[table]

    def execute(self, sql: str, args=()):
        conn = self.conn
        verb = sql.lstrip()[:6].upper()
        if verb != "SELECT" and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # SQLite serialises an autocommitted change with the writers too;
            # without the lock it could land inside another's read-modify-write.
            with self.write() as tx:
                return tx.execute(sql, args)
        try:
            return PostgresTx(self, conn).execute(sql, args)
        except StorageUnavailable:
            # A read on a connection the server dropped since its last use (a
            # restart) is sent again once on a new one; a write is not, as it
            # may have been committed before the connection went.
            if not conn.broken or verb != "SELECT":
                raise
            return PostgresTx(self, self.conn).execute(sql, args)

    def executemany(self, sql: str, rows) -> None:
        raise TypeError("writes go through `with db.write() as tx:`")

    @contextlib.contextmanager
    def write(self) -> Iterator[PostgresTx]:
        """One atomic read-modify-write transaction, writers one at a time."""
        conn = self._begin()
        try:
            yield PostgresTx(self, conn)
        except BaseException as e:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")  # fails only on a connection already lost
            if isinstance(e, psycopg.Error):
                raise self._storage_error(e, conn) or e
            if isinstance(e, UnicodeEncodeError):
                raise _not_utf8(e) from None
            raise
        else:
            try:
                conn.execute("COMMIT")
            except psycopg.Error as e:
                raise self._storage_error(e, conn) or e

    def _begin(self) -> psycopg.Connection:
        """BEGIN and take the writers' lock.  A connection the server dropped
        since its last use (a restart) is replaced once: nothing was sent yet."""
        for attempt in (1, 2):
            conn = self.conn
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise RuntimeError("write() transactions do not nest")  # as SQLite refuses a second BEGIN
            try:
                # One round trip (no parameters: the simple protocol takes both),
                # as the lock holder's every round trip delays all other writers.
                conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK:d})")
                return conn
            except psycopg.Error as e:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                error = self._storage_error(e, conn) or e
                if attempt == 2 or not isinstance(error, StorageUnavailable) or not conn.broken:
                    raise error from None
        raise AssertionError("unreachable")

    def _migrate(self) -> None:
        with contextlib.suppress(pgerrors.UndefinedTable):
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row and int(row["value"]) == SCHEMA_VERSION:
                return  # the common case takes no lock
        with self.write() as tx:
            tx.conn.execute(_ddl(MIGRATIONS[0])[0])  # the meta table
            row = tx.one("SELECT value FROM meta WHERE key='schema_version'")
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise Corruption(
                    f"This store has schema version {version}, newer than this dpl ({SCHEMA_VERSION}).",
                    hint="Upgrade dpl.",
                )
            for i in range(version, SCHEMA_VERSION):
                statements = _ddl(MIGRATIONS[i])
                for statement in statements[1:] if i == 0 else statements:
                    tx.conn.execute(statement)
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        """Close every connection this object opened (the store is done with)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")



__all__ = ["PostgresDatabase", "Row"]
