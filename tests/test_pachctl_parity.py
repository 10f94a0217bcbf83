"""pachctl's commands in dpl (issue 15): what a Pachyderm user reaches for.

Each test sets its data up through the engine in-process (a CLI call costs
~0.4 s of start-up) and drives the command it is about through the real
`dpl` executable, as a user would.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import tarfile
import threading
import time

import pytest

from dpl.engine import Store
from dplcli import DPL, dpl


@pytest.fixture
def api(store):
    s = Store.open(store)
    yield s
    s.close()


def as_json(store, *args):
    return json.loads(dpl(*args, "-o", "json", store=store).stdout)


def _du(root) -> int:
    """Bytes of the store's objects (chunks and index layers), the metadata aside."""
    total = 0
    for dirpath, _, names in os.walk(root):
        total += sum(os.path.getsize(os.path.join(dirpath, n)) for n in names if not n.startswith("meta.db"))
    return total


# ------------------------------------------------------------------- files


def test_copy_file_reuses_the_source_chunks_and_stores_no_bytes(store, api):
    big = os.urandom(3 << 20)
    api.create_repo("src")
    api.create_repo("dst")
    api.put_bytes("src", "master", {"/big.bin": big, "/dir/a.txt": b"a\n", "/dir/b.txt": b"b\n"})
    before = _du(store)
    dpl("copy-file", "src@master:/big.bin", "dst@master:/copy.bin", store=store)
    dpl("copy-file", "src@master:/dir", "dst@master:/d2", store=store)
    grown = _du(store) - before
    assert grown < 64 << 10, f"the store grew by {grown} bytes for a copy by reference"
    api.files.clear_caches()
    assert api.read_file("dst", "master", "/copy.bin") == big
    assert api.file_row("dst", "master", "/copy.bin")["refs"] == api.file_row("src", "master", "/big.bin")["refs"]
    assert api.read_file("dst", "master", "/d2/b.txt") == b"b\n"
    missing = dpl("copy-file", "src@master:/nope", "dst@master:/x", store=store, check=False)
    assert missing.returncode != 0 and b"does not exist" in missing.stderr and b"Traceback" not in missing.stderr


def test_inspect_file_shows_a_file_and_a_directory(store, api):
    api.create_repo("r")
    c = api.put_bytes("r", "master", {"/a/x.txt": b"hello\n", "/a/y.txt": b"hi\n"})
    info = as_json(store, "inspect-file", "r@master:/a/x.txt")
    assert (info["type"], info["size"], info["commit"]) == ("file", 6, c.id)
    assert info["hash"] == api.file_row("r", "master", "/a/x.txt")["hash"].hex()
    d = as_json(store, "inspect-file", "r@master:/a")
    assert (d["type"], d["size"], d["files"]) == ("dir", 9, 2)
    assert b"Type:" in dpl("inspect-file", "r@master:/a/y.txt", store=store).stdout
    assert dpl("inspect-file", "r@master:/zzz", store=store, check=False).returncode != 0


def test_put_file_dash_f_from_url_untar_and_a_list_of_sources(store, api, tmp_path):
    api.create_repo("r")
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "data.csv").write_bytes(b"a,b\n1,2\n")
    (site / "pkg" / "one.txt").write_text("one\n")
    (site / "pkg" / "two.txt").write_text("two\n")
    with tarfile.open(site / "pkg.tar.gz", "w:gz") as tar:
        tar.add(site / "pkg", arcname="pkg")

    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        dpl("put-file", "r@master:/web/data.csv", "-f", f"{base}/data.csv", store=store)
        dpl("put-file", "r@master:/unpacked", "--untar", "-f", f"{base}/pkg.tar.gz", store=store)
        bad = dpl("put-file", "r@master:/x", "-f", f"{base}/missing.csv", store=store, check=False)
        assert bad.returncode != 0 and b"404" in bad.stderr and b"Traceback" not in bad.stderr
    finally:
        server.shutdown()
    (tmp_path / "local.txt").write_text("local\n")
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# one a line\n{tmp_path / 'local.txt'}\n\n{site / 'pkg'}\n")
    dpl("put-file", "r@master:/listed/", "-r", "-i", listing, store=store)
    files = {r["path"] for r in as_json(store, "list-file", "r@master", "-r")}
    assert files == {"/web/data.csv", "/unpacked/pkg/one.txt", "/unpacked/pkg/two.txt",
                     "/listed/local.txt", "/listed/pkg/one.txt", "/listed/pkg/two.txt"}
    assert api.read_file("r", "master", "/web/data.csv") == b"a,b\n1,2\n"
    assert len(api.list_commits("r", "master")) == 3  # the failed fetch committed nothing


# --------------------------------------------------------- commits and branches


def test_subscribe_commit_prints_each_commit_as_it_lands_until_ctrl_c(store, api):
    api.create_repo("r")
    first = api.put_bytes("r", "master", {"/a": b"1"})
    env = dict(os.environ, DPL_STORE=str(store))
    proc = subprocess.Popen([DPL, "subscribe-commit", "r@master", "-o", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert json.loads(proc.stdout.readline())["id"] == first.id  # the history first, as pachctl does
        second = api.put_bytes("r", "master", {"/b": b"2"})
        third = api.put_bytes("r", "master", {"/c": b"3"})
        assert [json.loads(proc.stdout.readline())["id"] for _ in range(2)] == [second.id, third.id]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and out == b""


def test_triggers_move_a_branch_when_size_commits_or_cron_hold(store, api):
    api.create_repo("r")
    spec = {"pipeline": {"name": "p"}, "transform": {"cmd": ["sh", "-c", "cp -r /pfs/r/* /pfs/out/"]},
            "input": {"pfs": {"repo": "r", "branch": "ready", "glob": "/"}}}
    dpl("create-branch", "r@ready", "--trigger", "master", "--trigger-commits", "3", store=store)
    dpl("create-branch", "r@big", "--trigger", "master", "--trigger-size", "1K", store=store)
    dpl("create-branch", "r@hourly", "--trigger", "master", "--trigger-cron", "@every 1h", "--trigger-all",
        "--trigger-commits", "2", store=store)
    info = as_json(store, "inspect-branch", "r@ready")
    assert info["head"] is None and info["trigger"] == {"source": "master", "size": None, "commits": 3, "cron": None, "all": False}
    api.create_pipeline(json.dumps(spec))
    jobs_before = len(api.list_jobs("p"))
    heads = lambda: {b["branch"]: b["head"] for b in api.list_branches("r")}  # noqa: E731
    c1 = api.put_bytes("r", "master", {"/1": b"x" * 10})
    c2 = api.put_bytes("r", "master", {"/2": b"x" * 10})
    h = heads()
    assert (h["ready"], h["big"]) == (None, None)
    assert h["hourly"] == c2.id  # two commits, and the schedule has ticked since the branch never moved
    c3 = api.put_bytes("r", "master", {"/3": b"x" * 2000})
    h = heads()
    assert (h["ready"], h["big"], h["hourly"]) == (c3.id, c3.id, c2.id)  # hourly: not an hour since c2
    assert len(api.list_jobs("p")) == jobs_before + 1  # the pipeline reading `ready` heard of the move
    api.put_bytes("r", "master", {"/4": b"y"})
    assert heads()["ready"] == c3.id and heads()["big"] == c3.id
    assert c1.id not in heads().values()
    bad = dpl("create-branch", "r@x", "--trigger-commits", "2", store=store, check=False)
    assert bad.returncode != 0 and b"--trigger" in bad.stderr and b"Traceback" not in bad.stderr
