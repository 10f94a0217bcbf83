"""Shared fixtures: stores in tmp_path, and the rule for service tests.

A test that needs a real service (Docker engine, S3 server, Ray cluster)
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


@pytest.fixture
def store(tmp_path):
    """A fresh store; DPL_TEST_OBJECT_STORE runs the suite on another object store."""
    root = tmp_path / "store"
    args = ["init", root]
    url = os.environ.get("DPL_TEST_OBJECT_STORE")
    if url:
        args += ["--object-store", f"{url.rstrip('/')}/{tmp_path.name}"]
    dpl(*args)
    return root
