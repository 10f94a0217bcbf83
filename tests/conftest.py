"""Shared fixtures: stores in tmp_path, and the rule for service tests.

A test that needs a real service (Docker engine, S3 server, Ray cluster, PostgreSQL)
asks for it through a session fixture that starts it once.  Locally such a
test skips with the reason when the service cannot be had; in CI (CI=true)
it fails instead, so a broken set-up can never pass silently.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from dplcli import dpl  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_unavailable(what: str, why: str):
    """Skip (locally) or fail (in CI) a test whose service is missing."""
    message = f"{what} is not available: {why}"
    if IN_CI:
        pytest.fail(message + " (CI must run every service test)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on loopback for the whole session.

    Started once with free ports, a temporary data directory and a random key
    pair; the AWS_* variables that point boto3 at it are set in this process,
    so every `dpl` subprocess finds it the standard way.  Stopped at the end.
    """
    from services.seaweedfs import SeaweedFS, Unavailable

    try:
        server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
        server.start()
    except Unavailable as e:
        service_unavailable("The S3 server (SeaweedFS)", str(e))
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            mp.delenv(key, raising=False)
        for key, value in server.environ().items():
            mp.setenv(key, value)
        yield server
    server.stop()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A real Docker engine for the whole session, with the test images built locally.

    Uses the running engine (DOCKER_HOST or the default socket), else starts
    `dockerd` (as root) and stops it at the end.  The images (busybox, a
    busybox without /bin/sh, and one with this machine's Python) are imported
    from local files, as nothing can be pulled here, and are kept by tag so
    the next session reuses them.  `engine.images` maps those names to tags.
    """
    from services.dockerd import DockerEngine, Unavailable

    engine = DockerEngine(tmp_path_factory.mktemp("dockerd"))
    try:
        engine.start()
        engine.build_test_images()
    except Unavailable as e:
        engine.stop()
        service_unavailable("The Docker engine", str(e))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (initdb + pg_ctl) on loopback for the whole session."""
    try:
        import psycopg  # noqa: F401  (the server is of no use to dpl without it)
        from services.postgres import PostgresServer, Unavailable
    except ImportError as e:
        service_unavailable("PostgreSQL", f"{e.name} is not installed (pip install 'dpl[postgres]')")
    try:
        server = PostgresServer()
        server.start()
    except Unavailable as e:
        service_unavailable("PostgreSQL", str(e))
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server):
    """The URL of a fresh, empty database of the session's server; dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


# The suites that run on each metadata backend (issue 12), through the
# `store` fixture; a test there that reads meta.db with sqlite3 itself can
# only run on SQLite, so it is not given the PostgreSQL variant.
METADATA_SUITES = {"test_repos", "test_pipelines", "test_provenance", "test_concurrency"}
SQLITE_ONLY = {
    "test_bad_input_is_one_sentence_and_changes_nothing": "snapshots meta.db with sqlite3",
    "test_killed_engine_resumes_the_job_without_redoing_finished_datums": "watches meta.db with sqlite3",
}


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

# The suites that also run through a real `dpl serve` (issue 14): the
# "served" variant of a test is the same test on a fresh store behind a
# server process of its own, every `dpl` call going to it by DPL_ADDRESS.
# DPL_TEST_SERVED=0 leaves the variant out on a workstation; CI runs it always.
SERVED_SUITES = {"test_repos", "test_pipelines", "test_provenance"}
EMBEDDED_ONLY = {
    # The executor is the server's: a client's DPL_SANDBOX does not reach it, nor do its notes reach the client.
    "test_secret_files_without_a_sandbox_fail_the_job_in_one_sentence": "DPL_SANDBOX is the server's environment",
    "test_without_bubblewrap_the_same_spec_runs_as_a_plain_subprocess": "DPL_SANDBOX is the server's environment",
    "test_user_code_cannot_change_a_stored_byte_or_reach_the_network": "fsck runs on the server's machine",
    "test_incremental_job_processes_only_changed_datums_and_matches_a_fresh_run": "its second store would need a server of its own",
}
SERVED = IN_CI or os.environ.get("DPL_TEST_SERVED", "1") not in ("0", "no", "false")


def pytest_generate_tests(metafunc):
    if "store" in metafunc.fixturenames and metafunc.module.__name__ in METADATA_SUITES:
        name = metafunc.function.__name__
        backends = ["sqlite"] if name in SQLITE_ONLY else list(BACKENDS)
        if SERVED and metafunc.module.__name__ in SERVED_SUITES and name not in EMBEDDED_ONLY:
            backends.append("served")
        metafunc.parametrize("store", backends, indirect=True)


def _served(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("store") == "served"


def pytest_collection_finish(session):
    # The pool starts a spare server only while more served tests are to come
    # (counted once -k and -m have deselected what they do).
    session.config._dpl_served_tests = sum(1 for item in session.items if _served(item))


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory, request):
    from serving import ServerPool

    pool = ServerPool(tmp_path_factory.mktemp("served"))
    pool.expected = getattr(request.config, "_dpl_served_tests", 0)
    yield pool
    pool.close()


@pytest.fixture
def metadata(request):
    """The metadata URL for a test parametrised with a backend (indirect):
    a fresh PostgreSQL database's, or None for SQLite (the default)."""
    return request.getfixturevalue("postgres_db") if getattr(request, "param", "sqlite") == "postgresql" else None


@pytest.fixture
def store(tmp_path, request):
    """A fresh store; DPL_TEST_OBJECT_STORE runs the suite on another object store.

    `DPL_TEST_OBJECT_STORE=s3://BUCKET/PREFIX` uses the S3 server that the
    AWS_* variables name, or, when AWS_ENDPOINT_URL is unset, a SeaweedFS
    started for the session (with that bucket created).  In the
    METADATA_SUITES it is parametrised: "postgresql" keeps the metadata in a
    fresh database of the session's PostgreSQL server, and in the
    SERVED_SUITES "served" puts the store behind a real `dpl serve`.
    """
    param = getattr(request, "param", "sqlite")
    args = []
    if param == "postgresql":
        args += ["--metadata", request.getfixturevalue("postgres_db")]
    url = os.environ.get("DPL_TEST_OBJECT_STORE")
    if url:
        if not os.environ.get("AWS_ENDPOINT_URL"):
            server = request.getfixturevalue("s3_server")
            client = server.client()
            try:
                client.create_bucket(Bucket=url.split("/")[2])
            except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
                pass  # made by an earlier test of this session
        # Each store its own prefix; a served store's is named where the pool makes it ({name}).
        args += ["--object-store", f"{url.rstrip('/')}/{tmp_path.name if param != 'served' else '{name}'}"]
    if param == "served":
        yield from _served_store(request, args)
        return
    root = tmp_path / "store"
    dpl("init", root, *args)
    yield root


def _served_store(request, init_args: list):
    """The store of a served test: a fresh one, behind a `dpl serve` of its own
    that every `dpl` call of the test reaches through DPL_ADDRESS."""
    server = request.getfixturevalue("server_pool").take(("--no-fsync", *init_args))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DPL_ADDRESS", server.url)
        yield server.store
    assert server.stop() == 0, server.log_path.read_text()[-3000:]
    failed = [e for e in server.events() if e["event"] == "server.error"]
    assert not failed, f"the server failed on a request: {failed[0]}"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real two-node Ray cluster on this machine for the whole session.

    Two `ray start` nodes of one CPU each (the head, and a second one joining
    it by address), every port a free one, no dashboard, a small object
    store; RAY_ADDRESS points every `dpl` subprocess at the head.  Stopped at
    the end by ending the processes it started, not with `ray stop`.
    """
    from services.raycluster import RayCluster, Unavailable

    try:
        cluster = RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1)
        cluster.start()
    except Unavailable as e:
        service_unavailable("A Ray cluster", str(e))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in cluster.environ().items():
            mp.setenv(key, value)
        yield cluster
    cluster.stop()
