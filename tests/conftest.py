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


def pytest_generate_tests(metafunc):
    if "store" in metafunc.fixturenames and metafunc.module.__name__ in METADATA_SUITES:
        backends = ["sqlite"] if metafunc.function.__name__ in SQLITE_ONLY else BACKENDS
        metafunc.parametrize("store", backends, indirect=True)


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
    fresh database of the session's PostgreSQL server.
    """
    root = tmp_path / "store"
    args = ["init", root]
    if getattr(request, "param", "sqlite") == "postgresql":
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
        args += ["--object-store", f"{url.rstrip('/')}/{tmp_path.name}"]
    dpl(*args)
    return root


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
