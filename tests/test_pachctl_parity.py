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
