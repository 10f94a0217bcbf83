"""The metadata schema, as the migrations that build it.

Each entry migrates the schema from version i to i + 1; the version is kept in
the `meta` table.  The DDL is written for SQLite; the PostgreSQL backend
translates its few SQLite-only words (see `postgres.py`), so both backends
build the same tables from this one list.
"""

from __future__ import annotations

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
    # 3: secrets move from secrets/*.json into the database (engine/secrets.py imports the old files).
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL,
        data TEXT NOT NULL                         -- JSON object: key -> value
    );
    """,
    # 4: users, hashed tokens, per-repo roles, pipeline creators and the audit log (engine/auth.py).
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        admin INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,                       -- the token's public part, which finds its row
        username TEXT NOT NULL,
        hash TEXT NOT NULL,                        -- scrypt of the secret part: never the token itself
        description TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        expires REAL
    );
    CREATE INDEX tokens_by_user ON tokens(username);
    CREATE TABLE roles (
        repo TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL,                        -- reader, writer or owner
        PRIMARY KEY (repo, username)
    );
    CREATE TABLE pipeline_creators (
        pipeline TEXT PRIMARY KEY,
        username TEXT NOT NULL                     -- whose rights its jobs act with
    );
    CREATE TABLE audit (
        id TEXT PRIMARY KEY,                       -- time-ordered: zero-padded nanoseconds and a nonce
        at REAL NOT NULL,
        username TEXT,
        action TEXT NOT NULL,                      -- METHOD /path
        target TEXT NOT NULL DEFAULT '',           -- the query string
        status INTEGER NOT NULL
    );
    """,
    # 5: branch triggers (engine/triggers.py): a branch that follows another when a condition holds.
    """
    CREATE TABLE branch_triggers (
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,                      -- the branch that moves ...
        source TEXT NOT NULL,                      -- ... to this branch's head
        size INTEGER,                              -- when it grew by this many bytes
        commits INTEGER,                           -- when this many commits landed
        cron TEXT,                                 -- when this schedule ticked since it last moved
        all_of INTEGER NOT NULL DEFAULT 0,         -- 1: every condition set must hold, 0: any
        PRIMARY KEY (repo, branch)
    );
    """,
    # 6: dpl transactions (engine/transactions.py): commits and pipeline changes that land together.
    """
    CREATE TABLE transactions (
        id TEXT PRIMARY KEY,                       -- also the global id of the commits it lands
        created REAL NOT NULL,
        state TEXT NOT NULL,                       -- 'open', 'finished' or 'deleted'
        finished REAL
    );
    CREATE TABLE transaction_ops (
        txn TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,                        -- 'create-pipeline' or 'update-pipeline'
        body TEXT NOT NULL,                        -- JSON: the spec text, its source, reprocess
        PRIMARY KEY (txn, seq)
    );
    """,
    # 7: what `dpl verify` found about an output commit (engine/verify.py): the latest verification of each.
    """
    CREATE TABLE verifications (
        repo TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        verified REAL NOT NULL,
        executor TEXT NOT NULL,
        checked INTEGER NOT NULL,                  -- datums re-run
        reproducible INTEGER NOT NULL,             -- of those, the ones whose outputs hashed the same
        total INTEGER NOT NULL,                    -- datums that made the commit
        sample INTEGER,                            -- --sample N, if given
        report TEXT NOT NULL DEFAULT '[]',         -- JSON: per datum, the differing files and diffs
        PRIMARY KEY (repo, commit_id)
    );
    """,
    # 8: a job's page lists its datums failed first and counts why they ran.  A page of
    # failed datums is one range of an index of the failed ones alone (not a walk of every
    # datum until enough failed ones turn up; partial, so a successful datum costs no
    # entry when it is recorded); the reasons are counted from an index, not from each
    # datum's row and logs.
    """
    CREATE INDEX datums_failed ON datums(pipeline, job, datum) WHERE state = 'failed';
    CREATE INDEX datums_by_reason ON datums(pipeline, job, reason);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
