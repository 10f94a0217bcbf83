"""`dpl serve` killed with SIGKILL (no shutdown of any kind), then started again.

Mid-upload: the client fails in one sentence, no commit (not even an open
one) is left, the spooled body is swept at the restart, and sending the same
put again lands it once.  Mid-job: the output branch shows nothing of the
job until the restarted server resumes it, and the datums finished before
the kill are kept, not run again.
"""

from __future__ import annotations

import os
import time

import pytest

from dplcli import DPL
from test_serve import Server, _put_and_wait_running, _slow_store, wait_until

pytestmark = pytest.mark.timeout(120)


def test_sigkill_mid_upload_leaves_no_commit_and_the_put_can_be_sent_again(tmp_path):
    import subprocess

    from dpl.engine import Store

    store = tmp_path / "store"
    Store.init(store, durable=False).create_repo("up")
    server = Server(store, tmp_path)
    data = os.urandom(8 << 20)
    # Stdin goes as one streamed request: the test holds the body's end back until the server is dead.
    put = subprocess.Popen([DPL, "--address", server.url, "put-file", "up@master:/big.bin", "-"], env=server.env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    put.stdin.write(data[: 4 << 20])
    put.stdin.flush()
    spool = store / "tmp" / "uploads"
    wait_until(lambda: spool.is_dir() and any(p.stat().st_size for d in spool.iterdir() for p in d.iterdir()),
               what="the server to spool the upload")
    server.proc.kill()
    server.proc.wait(10)
    try:
        put.stdin.write(data[4 << 20 :])
        put.stdin.close()
    except BrokenPipeError:  # the client already gave up
        pass
    _, err = put.communicate(timeout=30)
    assert put.returncode == 1
    assert err.startswith(b"error: The connection to the dpl server") and err.count(b"\n") == 2, err  # a sentence and a hint
    assert b"Traceback" not in err
    assert list(spool.iterdir()), "the killed server left its spooled upload behind"

    again = Server(store, tmp_path)
    assert again.http.get("/api/v1/repos/up/commits").json()["items"] == []  # no commit, open or finished
    assert again.http.get("/api/v1/repos/up/branches/master").status_code == 404
    assert list(spool.iterdir()) == []  # swept at the start
    started = [e for e in again.events() if e["event"] == "server.start"]
    assert started[-1]["swept_uploads"] == 1
    for _ in range(2):  # sending it again lands it; a third time changes nothing (the same bytes)
        again.dpl("put-file", "up@master:/big.bin", "-", input=data)
    assert again.dpl("get-file", "up@master:/big.bin").stdout == data
    commits = again.http.get("/api/v1/repos/up/commits").json()["items"]
    assert [c["state"] for c in commits] == ["finished", "finished"] and commits[0]["files"] == 1
    assert again.stop() == 0


def test_a_killed_server_is_one_sentence_to_the_sdk(tmp_path):
    """The SDK raises the one-sentence DplError for a dead server, not httpx's exception."""
    import dpl as sdk
    from dpl.engine import Store
    from dpl.engine.files import Source
    from dpl.storage.errors import DplError

    store = tmp_path / "store"
    Store.init(store, durable=False).create_repo("up")
    server = Server(store, tmp_path)
    remote = sdk.connect(server.url)
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    remote.put_files("up", "master", [Source(str(tmp_path / "f.bin"), "/f.bin")])
    server.proc.kill()
    server.proc.wait(10)
    with pytest.raises(DplError) as refused:
        remote.put_files("up", "master", [Source(str(tmp_path / "f.bin"), "/g.bin")])
    assert str(refused.value.message).startswith("Cannot reach the dpl server at") and refused.value.hint
    remote.close()


def test_sigkill_mid_job_then_the_restart_resumes_it_without_redoing_datums(tmp_path):
    from dpl.engine import Store

    store, files = _slow_store(tmp_path, 5)  # 0.5 s a datum, one at a time
    server = Server(store, tmp_path)
    job = _put_and_wait_running(server, files)
    wait_until(lambda: sum(d["state"] == "success" for d in server.http.get(f"/api/v1/jobs/{job['id']}/datums",
                                                                           params={"pipeline": "slow"}).json()["items"]) >= 2,
               what="two datums to finish")
    server.proc.kill()
    server.proc.wait(10)
    killed_at = time.time()

    s = Store.open(store)
    done_before = [d for d in s.list_datums("slow", job["id"]) if d["state"] == "success"]
    assert 2 <= len(done_before) < len(files)
    assert s.inspect_job("slow", job["id"])["state"] == "running"  # as the kill left it
    head = s.inspect_branch("slow", "master")["head"]
    assert head is None or not s.list_files("slow", head, recursive=True)  # nothing of the job on the output branch
    s.close()

    again = Server(store, tmp_path)
    wait_until(lambda: again.http.get(f"/api/v1/jobs/{job['id']}", params={"pipeline": "slow"}).json()["state"] == "success",
               timeout=30, what="the resumed job")
    datums = again.http.get(f"/api/v1/jobs/{job['id']}/datums", params={"pipeline": "slow"}).json()["items"]
    assert len(datums) == len(files) and all(d["state"] == "success" for d in datums)
    for d in done_before:  # finished before the kill: kept, not run again
        kept = next(x for x in datums if x["datum"] == d["datum"])
        assert kept["started"] == d["started"] < killed_at
    assert sum(x["started"] > killed_at for x in datums) == len(files) - len(done_before)
    for path, data in files.items():
        assert again.http.get("/api/v1/repos/slow/content", params={"path": path}).content == data
    assert again.stop() == 0
