"""What a step can see: its inputs, its code and the system, never the store or a secret it does not name.

Each test runs a step that searches the whole file system (but /proc, /sys
and /dev) for the value of a stored secret and for the store's own files,
on the local bubblewrap sandbox and on Docker, and asserts it finds none.
Secrets live in the metadata database; their values are scrubbed from every
log and job error, whichever secret they belong to.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import uuid

import pytest

from dpl.engine import Store
from dpl.engine.executors.local import bwrap_path
from conftest import service_unavailable
from dplcli import dpl
from readback import outputs

# Looks for $NEEDLE (joined from two halves, so that no command line or spec holds it whole)
# in every regular file, and for the store's files by name, then proves it could look at all.
SEARCH = r"""
needle="$HALF1$HALF2"
skip='( -path /proc -o -path /sys -o -path /dev -o -path /pfs/out ) -prune'
find / $skip -o -type f -print 2>/dev/null > /tmp/files
find / $skip -o -type f -exec grep -lF -- "$needle" {} + 2>/dev/null > /pfs/out/holding-secret
grep -E "/meta\.db(-wal|-shm)?$|/chunks/objects/|/$STORE_NAME/" /tmp/files > /pfs/out/store-files
grep -c . /tmp/files > /pfs/out/files-seen
cat /pfs/data/a > /pfs/out/input
ls -A /root 2>/dev/null > /pfs/out/root-home
ls -A /home 2>/dev/null > /pfs/out/homes
cat /etc/shadow > /pfs/out/shadow 2>/dev/null
true
"""


def bwrap_or_skip():
    if bwrap_path() is None:
        service_unavailable("bubblewrap", "bwrap is not installed (tests/services/install.sh installs it)")


def make_secrets(store) -> tuple[str, str]:
    """Two secrets: one the step names, one it does not; returns the values."""
    named, other = f"named-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    dpl("create-secret", "mine", "--from-literal", f"token={named}", store=store)
    dpl("create-secret", "theirs", "--from-literal", f"token={other}", store=store)
    return named, other


def search_spec(name: str, needle: str, store_name: str, image: str | None = None) -> dict:
    half = len(needle) // 2
    transform = {
        "cmd": ["sh", "-c", SEARCH],
        "env": {"HALF1": needle[:half], "HALF2": needle[half:], "STORE_NAME": store_name},
        "secrets": [{"name": "mine", "key": "token", "env_var": "MY_TOKEN"}, {"name": "mine", "mount_path": "/etc/mine"}],
    }
    if image:
        transform["image"] = image
    return {"pipeline": {"name": name}, "transform": transform, "input": {"pfs": {"repo": "data", "glob": "/"}}}


def run_search(store, code_dir, needle: str, executor: str, image: str | None = None, min_files: int = 1000) -> dict[str, bytes]:
    dpl("create-repo", "data", store=store)
    src = code_dir / "a"
    src.write_bytes(b"input bytes\n")
    dpl("put-file", "data@master:/a", src, store=store)
    spec = code_dir / "search.json"
    spec.write_text(json.dumps(search_spec("search", needle, store.name, image)))
    dpl("create-pipeline", spec, "--executor", executor, store=store)
    got = outputs(store, "search")
    assert got["/input"] == b"input bytes\n"  # it did run, with its input
    assert int(got["/files-seen"]) >= min_files, got["/files-seen"]  # and it could see the system
    return got


@pytest.mark.parametrize("layout", ["store-in-code-dir", "store-beside-code-dir"])
def test_a_local_step_finds_neither_the_store_nor_a_secret_it_does_not_name(tmp_path, layout):
    bwrap_or_skip()
    store_name = f"store-{uuid.uuid4().hex[:8]}"
    code_dir = tmp_path if layout == "store-in-code-dir" else tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    store = tmp_path / store_name
    dpl("init", store)
    named, other = make_secrets(store)
    got = run_search(store, code_dir, other, "local")
    assert got["/holding-secret"] == b"", got["/holding-secret"]
    assert got["/store-files"] == b"", got["/store-files"]
    assert b"search.json" not in got["/store-files"]
    assert not os.path.exists(store / "secrets")  # secrets are rows of the database, not files


def test_a_local_step_sees_its_own_secret_and_its_code_but_no_home(tmp_path):
    bwrap_or_skip()
    store = tmp_path / "store"
    dpl("init", store)
    named, _ = make_secrets(store)
    got = run_search(store, tmp_path, named, "local")
    # It searched for its own secret: the mounted file holds it.
    assert b"/etc/mine/token" in got["/holding-secret"].splitlines()
    # Of the homes, only the way to dpl's own Python (a pyenv under /root, say) is there.
    interpreters = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    allowed = {p.split("/")[2] for p in interpreters if p.startswith(("/root/", "/home/"))}
    assert set(got.get("/root-home", b"").decode().split()) <= allowed
    assert set(got.get("/homes", b"").decode().split()) <= allowed
    assert got["/shadow"] == b""  # /etc is there, less its secrets


@pytest.mark.docker
def test_a_docker_step_finds_neither_the_store_nor_a_secret_it_does_not_name(tmp_path, docker_engine):
    store_name = f"store-{uuid.uuid4().hex[:8]}"
    store = tmp_path / store_name
    dpl("init", store)
    _, other = make_secrets(store)
    got = run_search(store, tmp_path, other, "docker", image=docker_engine.images["busybox"], min_files=1)
    assert got["/holding-secret"] == b"", got["/holding-secret"]
    assert got["/store-files"] == b"", got["/store-files"]


def test_logs_and_job_errors_scrub_every_secret_of_the_store(store, tmp_path):
    """A step that prints a secret it was never given (found anywhere) still shows *** in logs and errors."""
    _, other = make_secrets(store)
    dpl("create-repo", "data", store=store)
    spec = {
        "pipeline": {"name": "leaky"},
        "transform": {"cmd": ["sh", "-c", f"echo out:{other}; echo err:{other} >&2; exit 3"],
                      "secrets": [{"name": "mine", "key": "token", "env_var": "MY_TOKEN"}]},
        "input": {"pfs": {"repo": "data", "glob": "/"}},
        "datum_tries": 1,
    }
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(spec))
    dpl("create-pipeline", path, store=store)
    src = tmp_path / "a"
    src.write_bytes(b"a")
    proc = dpl("put-file", "data@master:/a", src, store=store, check=False)
    printed = proc.stdout.decode() + proc.stderr.decode()
    assert "err:***" in printed and other not in printed

    [job] = [j for j in json.loads(dpl("list-job", "-o", "json", store=store).stdout) if j["pipeline"] == "leaky" and j["state"] == "failure"]
    assert "err:***" in job["error"] and other not in job["error"]
    logs = dpl("logs", "--job", f"leaky@{job['id']}", store=store).stdout.decode()
    assert "out:***" in logs and "err:***" in logs and other not in logs
    db = sqlite3.connect(store / "meta.db")
    assert not [r for r in db.execute("SELECT stdout, stderr, error FROM datums") if any(other in (v or "") for v in r)]
    assert oct(os.stat(store / "meta.db").st_mode & 0o777) == "0o600"  # it holds the secrets


def test_secrets_kept_as_files_by_an_older_store_move_into_the_database(store):
    folder = store / "secrets"
    folder.mkdir(mode=0o700)
    record = {"name": "legacy", "created": 1700000000.0, "data": {"password": "hunter2", "user": "ann"}}
    (folder / "legacy.json").write_text(json.dumps(record))
    listed = json.loads(dpl("list-secret", "-o", "json", store=store).stdout)
    assert [(s["name"], s["keys"], s["created"][:10]) for s in listed] == [("legacy", ["password", "user"], "2023-11-14")]
    assert not folder.exists()
    assert "hunter2" not in dpl("list-secret", "-o", "json", store=store).stdout.decode()
    s = Store.open(store)
    try:
        assert s.secret_values() == ["hunter2", "ann"]
        spec = type("S", (), {"name": "p", "transform": {"secrets": [{"name": "legacy", "key": "password", "env_var": "PW"}]}})()
        assert s.resolve_secrets(spec) == ({"PW": "hunter2"}, {})
    finally:
        s.close()
    dpl("delete-secret", "legacy", store=store)
    assert json.loads(dpl("list-secret", "-o", "json", store=store).stdout) == []


def test_a_spec_kept_in_a_home_directory_shows_its_code_files_not_the_home(tmp_path):
    bwrap_or_skip()
    if not os.access("/home", os.W_OK):
        pytest.skip("needs a home directory of its own under /home")
    home = f"/home/dpl-test-{uuid.uuid4().hex[:8]}"
    os.mkdir(home)
    try:
        store = tmp_path / "store"
        dpl("init", store)
        dpl("create-repo", "data", store=store)
        with open(f"{home}/step.sh", "w") as f:
            f.write("pwd > /pfs/out/cwd; ls -A . > /pfs/out/seen\n")
        with open(f"{home}/private-key", "w") as f:
            f.write("not for the step\n")
        spec = {"pipeline": {"name": "homely"}, "transform": {"cmd": ["sh", "step.sh"]}, "input": {"pfs": {"repo": "data", "glob": "/"}}}
        with open(f"{home}/spec.json", "w") as f:
            json.dump(spec, f)
        dpl("create-pipeline", f"{home}/spec.json", store=store)
        src = tmp_path / "a"
        src.write_bytes(b"a")
        dpl("put-file", "data@master:/a", src, store=store)
        got = outputs(store, "homely")
        assert got["/cwd"].decode().strip() == home
        assert got["/seen"].split() == [b"step.sh"]
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.postgres
def test_stores_sharing_postgresql_metadata_share_one_set_of_secrets(tmp_path, postgres_db):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        dpl("init", root, "--metadata", postgres_db)
    dpl("create-secret", "shared", "--from-literal", "token=pg-s3cr3t", store=one)
    listed = json.loads(dpl("list-secret", "-o", "json", store=two).stdout)
    assert [(s["name"], s["keys"]) for s in listed] == [("shared", ["token"])]
    assert "pg-s3cr3t" not in json.dumps(listed)
    dpl("delete-secret", "shared", store=two)
    assert json.loads(dpl("list-secret", "-o", "json", store=one).stdout) == []
