"""`dpl serve` killed with SIGKILL (no shutdown of any kind), then started again.

Mid-upload: the client fails in one sentence, no commit (not even an open
one) is left, the spooled body is swept at the restart, and sending the same
put again lands it once.  Mid-job: the output branch shows nothing of the
job until the restarted server resumes it, and the datums finished before
the kill are kept, not run again.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from dplcli import DPL
from test_serve import Server, _gated_store, _put_and_wait_running, _wait_for_successes, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def start(tmp_path):
    """Start `dpl serve` on a store; whatever a failed test left running is killed after it."""
    made = []

    def started(store):
        made.append(Server(store, tmp_path))
        return made[-1]

    yield started
    for server in made:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def test_sigkill_mid_upload_leaves_no_commit_and_the_put_can_be_sent_again(tmp_path, start):
    import subprocess

    from dpl.engine import Store

    store = tmp_path / "store"
    Store.init(store, durable=False).create_repo("up")
    server = start(store)
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

    again = start(store)
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


def test_a_killed_server_is_one_sentence_to_the_sdk(tmp_path, start):
    """The SDK raises the one-sentence DplError for a dead server, not httpx's exception."""
    import dpl as sdk
    from dpl.engine import Store
    from dpl.engine.files import Source
    from dpl.storage.errors import DplError

    store = tmp_path / "store"
    Store.init(store, durable=False).create_repo("up")
    server = start(store)
    remote = sdk.connect(server.url)
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    remote.put_files("up", "master", [Source(str(tmp_path / "f.bin"), "/f.bin")])
    server.proc.kill()
    server.proc.wait(10)
    with pytest.raises(DplError) as refused:
        remote.put_files("up", "master", [Source(str(tmp_path / "f.bin"), "/g.bin")])
    assert str(refused.value.message).startswith("Cannot reach the dpl server at") and refused.value.hint
    remote.close()


def test_sigkill_mid_job_then_the_restart_resumes_it_without_redoing_datums(tmp_path, start):
    from dpl.engine import Store

    store, files, gate = _gated_store(tmp_path, 5, free=2)
    server = start(store)
    job = _put_and_wait_running(server, files)
    _wait_for_successes(server, job, 2)
    server.proc.kill()
    server.proc.wait(10)
    killed_at = time.time()

    s = Store.open(store)
    done_before = [d for d in s.list_datums("slow", job["id"]) if d["state"] == "success"]
    assert sorted(d["key"] for d in done_before) == ["in:/f0", "in:/f1"]  # the third was held at the gate
    assert s.inspect_job("slow", job["id"])["state"] == "running"  # as the kill left it
    head = s.inspect_branch("slow", "master")["head"]
    assert head is None or not s.list_files("slow", head, recursive=True)  # nothing of the job on the output branch
    s.close()

    gate.touch()
    again = start(store)
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


# ------------------------------------------------------------------ bad input


def test_a_schema_driven_fuzz_run_finds_no_5xx_and_every_refusal_is_a_sentence(tmp_path, start):
    """schemathesis generates requests, valid and not, for every operation of the
    served OpenAPI document (bounded: 8 examples each, ~15 s on an idle machine)."""
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    from dpl.engine import Store

    store = tmp_path / "store"
    s = Store.init(store, durable=False)
    s.create_repo("words")
    s.put_bytes("words", "master", {"/a.txt": b"alpha"})
    # Auth on from the start, the fuzzer an admin: otherwise its first generated
    # create-user turns auth on and every later request is a mere 401.
    admin = {"Authorization": f"Bearer {s.auth.activate('root')['token']}"}
    s.close()
    server = start(store)
    server.http.headers.update(admin)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=admin)
    found: dict[str, list] = {}
    operations = 0
    budget = time.monotonic() + 90  # a guard for a slow machine, not the expected time

    for result in schema.get_all_operations():
        op = result.ok()
        if "application/x-tar" in str(op.definition.raw.get("requestBody", "")):
            continue  # schemathesis cannot write a tar body; garbage tar is checked below
        operations += 1

        @settings(max_examples=8, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)))
        def fuzz(case):
            response = case.call(base_url=server.url, headers=admin, timeout=30)
            try:
                body = response.json()
            except ValueError:
                body = None
            sentence = isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].endswith(".")
            if response.status_code >= 500 or (response.status_code >= 400 and not sentence):
                found.setdefault(f"{op.method.upper()} {op.path}", []).append(f"{response.status_code} {response.text[:200]} "
                                                                             f"<- {case.as_curl_command()}")

        fuzz()
        if time.monotonic() > budget:
            break
    assert operations > 50  # the whole API was walked
    assert not found, "\n".join(f"{k}: {v[0]}" for k, v in found.items())
    assert not [e for e in server.events() if e["event"] == "server.error"]
    garbage = server.http.post("/api/v1/repos/words/upload", content=b"not a tar stream" * 100)
    assert garbage.status_code == 400 and garbage.json()["error"].startswith("The upload is not a readable tar stream")
    assert server.stop() == 0


def test_an_oversized_body_is_a_413_in_one_sentence_without_being_read(tmp_path, start):
    import socket
    from urllib.parse import urlsplit

    from dpl.engine import Store
    from dpl.server.limits import MAX_BODY

    store = tmp_path / "store"
    Store.init(store, durable=False).close()
    server = start(store)
    where = urlsplit(server.url)

    def send(head: bytes, body: bytes = b"") -> tuple[int, dict]:
        with socket.create_connection((where.hostname, where.port)) as conn:
            conn.sendall(head + body)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        return status, json.loads(answer.partition(b"\r\n\r\n")[2])

    # Announced: refused before a byte of it is read (the test sends none).
    status, body = send(f"POST /api/v1/repos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    assert status == 413 and body["type"] == "BodyTooLarge"
    assert body["error"].endswith("is larger than the 128 MiB the server reads into memory.") and body["hint"]
    # Chunked, with no length announced: refused once the limit is passed.
    piece = b"x" * (8 << 20)
    frames = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") * (MAX_BODY // len(piece) + 1) + b"0\r\n\r\n"
    try:  # the server answers and closes while the client still sends: the answer may be lost in the reset
        status, body = send(b"POST /api/v1/pipelines HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n", frames)
        assert status == 413 and body["type"] == "BodyTooLarge"
    except ConnectionError:
        pass
    wait_until(lambda: [e for e in server.events() if e["event"] == "request" and e["path"] == "/api/v1/pipelines" and e["status"] == 413],
               what="the server's 413 for the chunked body")
    # File bytes stream to disk: a put larger than the bound is no refusal.
    assert server.http.put("/api/v1/repos/big/content", params={"path": "/x"}, content=b"").status_code == 404  # (no repo: it reached the handler)
    assert not [e for e in server.events() if e["event"] == "server.error"]
    assert server.stop() == 0
