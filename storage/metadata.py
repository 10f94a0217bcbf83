"""The metadata database: SQLite in WAL mode with a schema version.

Repos, branches, commits, pipelines, jobs, datums and lineage edges live here.
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

from .errors import Corruption, DiskFull, DplError, InvalidRef, StorageUnavailable

# Each entry migrates the schema from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE repos (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'user'          -- 'user' or 'pipeline'
    );
    CREATE TABLE branches (
        repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        head TEXT,                                 -- commit id, NULL when empty
        created REAL NOT NULL,
        PRIMARY KEY (repo, name)
    );
    CREATE TABLE commits (
        repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
        id TEXT NOT NULL,                          -- global id, shared downstream
        branch TEXT,
        parent TEXT,
        state TEXT NOT NULL,                       -- 'open' or 'finished'
        layers TEXT NOT NULL DEFAULT '[]',         -- full index: parent's layers + own
        delta TEXT NOT NULL DEFAULT '[]',          -- own layers only
        size INTEGER NOT NULL DEFAULT 0,
        nfiles INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        finished REAL,
        description TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL DEFAULT 'user',       -- 'user' or 'auto' (made by a job)
        job TEXT,
        PRIMARY KEY (repo, id)
    );
    CREATE INDEX commits_by_id ON commits(id);
    CREATE INDEX commits_by_branch ON commits(repo, branch, state);
    """,
    """
    CREATE TABLE pipelines (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,                        -- normalised spec JSON (secrets by name only)
        spec_hash TEXT NOT NULL,
        transform_hash TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'running',     -- 'running' or 'stopped'
        output_branch TEXT NOT NULL DEFAULT 'master',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE pipeline_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,
        spec_hash TEXT NOT NULL,
        transform_hash TEXT NOT NULL,
        created REAL NOT NULL,
        history_commit TEXT,                       -- commit in the store's spec git repository
        code TEXT NOT NULL DEFAULT '{}',           -- git HEAD / dirty of the spec's work tree
        reprocess INTEGER NOT NULL DEFAULT 0,      -- bumped by update-pipeline --reprocess
        PRIMARY KEY (name, version)
    );
    CREATE TABLE pipeline_inputs (
        pipeline TEXT NOT NULL,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        PRIMARY KEY (pipeline, repo, branch)
    );
    CREATE TABLE jobs (
        id TEXT NOT NULL,                          -- the global id of the wave
        pipeline TEXT NOT NULL,
        version INTEGER NOT NULL,                  -- pipeline version it runs
        state TEXT NOT NULL,                       -- created, running, success, failure, unrunnable
        reason TEXT NOT NULL DEFAULT 'commit',     -- commit, create, update, reprocess, start
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        heartbeat REAL,
        owner TEXT,                                -- host:pid:nonce of the runner holding the job
        inputs TEXT NOT NULL DEFAULT '[]',         -- [{name, repo, branch, commit}], pinned at start
        salt TEXT,                                 -- transform hash the datum ids were made with
        executor TEXT NOT NULL DEFAULT '{}',       -- kind, sandbox, image digest
        datum_list TEXT,                           -- object id of the Arrow table of every datum
        output_commit TEXT,
        processed INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        PRIMARY KEY (pipeline, id)
    );
    CREATE INDEX jobs_by_id ON jobs(id);
    CREATE INDEX jobs_by_state ON jobs(state, created);
    CREATE TABLE datums (
        pipeline TEXT NOT NULL,
        job TEXT NOT NULL,
        datum TEXT NOT NULL,
        key TEXT NOT NULL,                         -- the glob matches it is made of
        state TEXT NOT NULL,                       -- success, failed
        reason TEXT,                               -- why it ran: new input, changed content, spec changed, ...
        inputs TEXT NOT NULL,                      -- [{name, repo, commit, path, files: [[path, hash, size]]}]
        started REAL,
        finished REAL,
        tries INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        stdout TEXT,
        stderr TEXT,
        error TEXT,
        outputs INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (pipeline, job, datum)
    );
    CREATE INDEX datums_by_id ON datums(pipeline, datum);
    CREATE TABLE datum_outputs (
        pipeline TEXT NOT NULL,
        datum TEXT NOT NULL,
        batch TEXT NOT NULL,                       -- object id of the Arrow table holding the rows
        start INTEGER NOT NULL,
        count INTEGER NOT NULL,
        job TEXT NOT NULL,                         -- the job that really ran it
        PRIMARY KEY (pipeline, datum)
    );
    CREATE TABLE lineage (
        repo TEXT NOT NULL,                        -- an input file version ...
        path TEXT NOT NULL,
        hash TEXT NOT NULL,
        pipeline TEXT NOT NULL,                    -- ... was read by this datum
        datum TEXT NOT NULL,
        PRIMARY KEY (repo, path, hash, pipeline, datum)
    ) WITHOUT ROWID;
    """,
    # 2: the code a job really ran (engine/code.py), taken when it starts.
    """
    ALTER TABLE jobs ADD COLUMN code TEXT NOT NULL DEFAULT '{}';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class Metadata:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
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
            if row and int(row[0]) == SCHEMA_VERSION:
                return  # the common case takes no write lock
        except sqlite3.OperationalError:
            pass  # a new database: no meta table yet
        with self.write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
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
                        db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def write(self):
        """One atomic read-modify-write transaction holding the write lock."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._storage_error(e) or e
        try:
            yield conn
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

    def query(self, sql: str, args=()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            raise self._storage_error(e) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def one(self, sql: str, args=()) -> sqlite3.Row | None:
        try:
            return self.conn.execute(sql, args).fetchone()
        except sqlite3.OperationalError as e:
            raise self._storage_error(e) or e
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _not_utf8(e: UnicodeEncodeError) -> InvalidRef:
    """A name that is no text (undecodable bytes in a command-line argument)
    can name nothing stored: say so instead of failing in SQLite."""
    return InvalidRef(f"{e.object!r} is not valid UTF-8 text, so it names nothing in the store.", hint="Check the name for stray bytes.")
