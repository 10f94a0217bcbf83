"""`dpl serve`: a real server process, driven by the real `dpl` CLI (--address)
and by httpx, over one store on this machine.

One server is shared by the tests of this module (each uses repos of its own
names); the SIGTERM tests start their own.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from dplcli import dpl
from serving import Server, _env  # noqa: F401  (other modules import them from here)

pytestmark = pytest.mark.timeout(120)


def embedded(store, tmp_path, *args, **kw):
    return dpl(*args, store=store, env={**_env(tmp_path), "DPL_ADDRESS": "local"}, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    store = base / "store"
    dpl("init", store, "--no-fsync", env=_env(base))
    server = Server(store, base)
    yield server, base
    assert server.stop() == 0
    # Structured logs: every line the server wrote, whatever happened, is one JSON object.
    lines = server.log_path.read_text().splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines)


def wait_until(check, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- data


def test_files_round_trip_bytes_and_the_cli_prints_what_it_prints_embedded(served, tmp_path):
    server, base = served
    big = os.urandom(3 << 20) + bytes(range(256)) * 100  # several chunks
    (tmp_path / "big.bin").write_bytes(big)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "ü b.txt").write_text("unicode name\n")
    server.dpl("create-repo", "rt")
    server.dpl("put-file", "rt@master:/big.bin", tmp_path / "big.bin")
    server.dpl("put-file", "-r", "rt@master:/t", tree)
    server.dpl("put-file", "rt@master:/stdin.txt", "-", input=b"from stdin")

    assert server.dpl("get-file", "rt@master:/big.bin").stdout == big
    assert server.http.get("/api/v1/repos/rt/content", params={"path": "/stdin.txt"}).content == b"from stdin"
    server.dpl("get-file", "-r", "rt@master:/t", "-o", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "ü b.txt").read_text() == "unicode name\n"
    assert (tmp_path / "out" / "a.txt").read_text() == "alpha\n"

    for args in (["list-file", "-r", "rt@master"], ["diff-file", "rt@master", "-o", "json"]):
        remote, local = server.dpl(*args), embedded(server.store, base, *args)
        assert remote.stdout == local.stdout, args


def test_refusals_are_the_same_sentence_through_the_server(served):
    server, base = served
    for args in (["get-file", "nope@master:/x"], ["list-file", "rt@master:/missing"], ["create-repo", "bad name!"]):
        remote = server.dpl(*args, check=False)
        local = embedded(server.store, base, *args, check=False)
        assert remote.returncode == local.returncode == 1, args
        assert remote.stderr == local.stderr and remote.stderr.startswith(b"error: "), args
        assert b"Traceback" not in remote.stderr
    answer = server.http.get("/api/v1/repos/nope")
    assert answer.status_code == 404
    assert answer.json()["type"] == "RepoNotFound" and answer.json()["error"].endswith(".")
    bad = server.http.post("/api/v1/repos", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and set(bad.json()) == {"error", "hint", "type"}


def test_range_reads_serve_exactly_the_bytes_asked(served, tmp_path):
    server, _ = served
    data = os.urandom(5 << 20)
    (tmp_path / "r.bin").write_bytes(data)
    server.dpl("create-repo", "ranges")
    server.dpl("put-file", "ranges@master:/r.bin", tmp_path / "r.bin")
    url = "/api/v1/repos/ranges/content"
    for header, want in (("bytes=100-199", data[100:200]), ("bytes=4194000-", data[4194000:]), ("bytes=-10", data[-10:]),
                         ("bytes=1048570-3145740", data[1048570:3145741])):
        answer = server.http.get(url, params={"path": "/r.bin"}, headers={"Range": header})
        assert answer.status_code == 206, header
        assert answer.content == want, header
        assert answer.headers["content-range"].endswith(f"/{len(data)}")
    whole = server.http.get(url, params={"path": "/r.bin", "ref": "master"})
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    past = server.http.get(url, params={"path": "/r.bin"}, headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"


def test_listings_are_paged_and_pages_read_one_commit(served, tmp_path):
    server, base = served
    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(2500):
        (tree / f"f{i:05d}").write_text(str(i))
    server.dpl("create-repo", "paged")
    server.dpl("put-file", "-r", "paged@master:/", tree)
    first = server.http.get("/api/v1/repos/paged/files", params={"recursive": True, "limit": 1000}).json()
    assert len(first["items"]) == 1000 and first["next_cursor"]
    # The branch moves between pages; the listing goes on reading the commit it began with.
    server.http.put("/api/v1/repos/paged/content", params={"path": "/a-new-file"}, content=b"x").raise_for_status()
    paths, cursor = [i["path"] for i in first["items"]], first["next_cursor"]
    while cursor:
        answer = server.http.get("/api/v1/repos/paged/files", params={"recursive": True, "limit": 1000, "cursor": cursor}).json()
        paths += [i["path"] for i in answer["items"]]
        cursor = answer["next_cursor"]
    assert paths == [f"/f{i:05d}" for i in range(2500)]
    assert server.http.get("/api/v1/repos/paged/files", params={"limit": 0}).status_code == 400
    assert server.http.get("/api/v1/repos/paged/files", params={"cursor": "garbage!"}).status_code == 400
    listed = server.dpl("list-file", "-r", "paged@master").stdout.decode().splitlines()
    assert len(listed) == 1 + 2501  # header, every file of the head (the CLI pages for you)


# ---------------------------------------------------------------- pipelines


SPEC = {
    "pipeline": {"name": "upper"},
    "transform": {"cmd": ["sh", "-c", "for f in /pfs/words/*; do tr a-z A-Z < $f > /pfs/out/$(basename $f); done"]},
    "input": {"pfs": {"repo": "words", "glob": "/*"}},
}


def test_a_put_through_the_server_runs_the_pipeline_by_itself(served, tmp_path):
    server, base = served
    server.dpl("create-repo", "words")
    (tmp_path / "upper.json").write_text(json.dumps(SPEC))
    server.dpl("create-pipeline", tmp_path / "upper.json", "--no-wait")
    # Nobody waits: a plain HTTP put, then the scheduler alone makes the output.
    server.http.put("/api/v1/repos/words/content", params={"path": "/hello.txt"}, content=b"hello server\n").raise_for_status()

    def output():
        answer = server.http.get("/api/v1/repos/upper/content", params={"path": "/hello.txt"})
        return answer.content if answer.status_code == 200 else None

    assert wait_until(output, what="the pipeline's output") == b"HELLO SERVER\n"
    jobs = server.http.get("/api/v1/jobs", params={"pipeline": "upper"}).json()["items"]
    assert jobs[0]["state"] == "success" and jobs[0]["reason"] == "commit"
    # The CLI waits for the server's job and reports it as it does embedded.
    put = server.dpl("put-file", "words@master:/second.txt", "-", input=b"again\n")
    assert b"job upper@" in put.stderr and b"success: 1 datums processed, 1 skipped" in put.stderr
    assert server.dpl("get-file", "upper@master:/second.txt").stdout == b"AGAIN\n"
    args = ["inspect-pipeline", "upper", "-o", "json"]
    assert server.dpl(*args).stdout == embedded(server.store, base, *args).stdout
    job = jobs[0]["id"]
    logs = server.http.get(f"/api/v1/jobs/{job}/datums", params={"pipeline": "upper"}).json()["items"]
    assert [d["state"] for d in logs] == ["success"]
    events = [e for e in server.events() if e["event"] in ("job.start", "job.end") and e["job"] == job]
    assert [(e["event"], e.get("state")) for e in events] == [("job.start", None), ("job.end", "success")]


def test_secrets_are_write_only(served):
    server, _ = served
    server.dpl("create-secret", "db", "--from-literal", "password=hunter2-very-secret")
    for path in ("/api/v1/secrets", "/api/v1/secrets/db"):
        answer = server.http.get(path)
        assert answer.status_code == 200 and "hunter2-very-secret" not in answer.text and "password" in answer.text
    assert b"password" in server.dpl("list-secret").stdout


def test_openapi_document_and_metrics(served):
    server, _ = served
    doc = server.http.get("/openapi.json").json()
    for path in ("/api/v1/repos", "/api/v1/repos/{repo}/content", "/api/v1/pipelines", "/api/v1/jobs/{job}/datums", "/api/v1/dag",
                 "/api/v1/secrets"):
        assert path in doc["paths"], path
    assert server.http.get("/docs").status_code == 200
    server.http.post("/api/v1/repos", json={"name": "metered"}).raise_for_status()
    server.http.put("/api/v1/repos/metered/content", params={"path": "/m"}, content=b"m").raise_for_status()
    server.http.get("/api/v1/repos").raise_for_status()
    text = server.http.get("/metrics").text
    assert 'dpl_commits_landed_total{repo="metered"} 1.0' in text
    assert 'dpl_http_request_seconds_bucket{le="0.05",method="GET",route="/api/v1/repos"}' in text
    assert 'dpl_http_requests_total{method="GET",route="/api/v1/repos",status="200"}' in text
    assert "dpl_commits_landed_total{" in text
    requests = [e for e in server.events() if e["event"] == "request"]
    assert requests and {"method", "route", "status", "ms"} <= set(requests[-1])


def test_connect_saves_the_address_for_every_command(served, tmp_path):
    server, _ = served
    env = {**_env(tmp_path), "DPL_STORE": str(tmp_path / "nowhere")}  # no local store: only the server can answer
    dpl("connect", server.url, env=env)
    assert json.loads((tmp_path / "config" / "dpl" / "config.json").read_text())["address"] == server.url
    assert json.loads(dpl("inspect-repo", "words", "-o", "json", env=env).stdout)["name"] == "words"
    assert b"words" in dpl("list-repo", env=env).stdout  # also the commands cli/fast.py answers without typer
    assert dpl("inspect-repo", "words", env={**env, "DPL_ADDRESS": "local"}, check=False).returncode == 1
    dpl("disconnect", env=env)
    assert dpl("inspect-repo", "words", env=env, check=False).returncode == 1
    unreachable = dpl("--address", "http://127.0.0.1:9", "inspect-repo", "words", env=env, check=False)
    assert unreachable.returncode == 1 and unreachable.stderr.startswith(b"error: Cannot reach the dpl server")
    for malformed in ("http://[bad", "ftp://host", "http://"):
        refused = dpl("--address", malformed, "inspect-repo", "words", env=env, check=False)
        assert refused.returncode == 1 and refused.stderr.startswith(f"error: {malformed!r} is not the address of a dpl server.".encode())
        assert b"Traceback" not in refused.stderr


# ------------------------------------------------------------------ shutdown

SLOW = {
    "pipeline": {"name": "slow"},
    "transform": {"cmd": ["sh", "-c", "sleep 0.5; cp /pfs/in/* /pfs/out/"]},
    "parallelism_spec": {"constant": 1},  # datums one after another: a stop always finds some done, some not
    "input": {"pfs": {"repo": "in", "glob": "/*"}},
}


def _slow_store(tmp_path, n: int, cmd: list[str] | None = None):
    """Set up in-process (a CLI call per step would cost more than the test); `cmd` replaces SLOW's step."""
    from dpl.engine import Store

    store = tmp_path / "store"
    s = Store.init(store, durable=False)
    s.create_repo("in")
    s.create_pipeline(json.dumps(SLOW if cmd is None else {**SLOW, "transform": {"cmd": cmd}}))
    s.close()
    return store, {f"/f{i}": str(i).encode() for i in range(n)}


def _gated_store(tmp_path, n: int, free: int):
    """A store whose pipeline copies `n` files, one datum at a time, where every datum after the
    first `free` waits until `gate/open` exists.  The gate is a host directory the store's config
    shows to steps (`sandbox_paths`), so the test, not the machine's speed, decides where a kill
    finds the job: with the first `free` datums on record and the next one running."""
    gate = tmp_path / "gate"
    gate.mkdir()
    held = "|".join(f"*/f{i}" for i in range(free, n))
    wait = f"for f in /pfs/in/*; do case $f in {held}) while [ ! -e {gate}/open ]; do sleep 0.1; done;; esac; done"
    store, files = _slow_store(tmp_path, n, ["sh", "-c", f"{wait}; cp /pfs/in/* /pfs/out/"])
    config = json.loads((store / "config.json").read_text())
    (store / "config.json").write_text(json.dumps(config | {"sandbox_paths": [str(gate)]}))
    return store, files, gate / "open"


def _wait_for_successes(server, job: dict, n: int) -> None:
    wait_until(lambda: sum(d["state"] == "success" for d in server.http.get(f"/api/v1/jobs/{job['id']}/datums",
                                                                           params={"pipeline": "slow"}).json()["items"]) >= n,
               what=f"{n} datums to finish")


def _put_and_wait_running(server, files):
    # The pipeline's first job (over the empty input) is the scheduler's first round: let it end, so
    # that the job of the commit below is the one that runs these datums.
    wait_until(lambda: all(j["state"] not in ("created", "running") for j in
                           server.http.get("/api/v1/jobs", params={"pipeline": "slow"}).json()["items"]), what="the first job")
    server.http.post("/api/v1/repos/in/upload", content=_tar(files)).raise_for_status()
    return wait_until(lambda: [j for j in server.http.get("/api/v1/jobs", params={"pipeline": "slow"}).json()["items"]
                               if j["state"] == "running" and j["reason"] == "commit"], what="the job to run")[0]


def test_sigterm_lets_the_running_job_finish_and_loses_nothing(tmp_path):
    store, files = _slow_store(tmp_path, 2)
    server = Server(store, tmp_path, "--grace", "30")
    job = _put_and_wait_running(server, files)
    began = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - began < 15
    stop = [e for e in server.events() if e["event"] == "server.stop"][0]
    assert stop["clean"] is True
    from dpl.engine import Store

    s = Store.open(store)
    assert s.inspect_job("slow", job["id"])["state"] == "success"
    for path, data in files.items():
        assert s.read_file("slow", "master", path) == data


def test_sigterm_past_the_grace_leaves_the_job_to_resume_without_redoing_datums(tmp_path):
    store, files, gate = _gated_store(tmp_path, 4, free=2)  # the third datum outlasts any grace
    server = Server(store, tmp_path, "--grace", "1.5")
    job = _put_and_wait_running(server, files)
    _wait_for_successes(server, job, 2)
    assert server.stop(timeout=20) == 0
    killed_at = time.time()
    left = [e for e in server.events() if e["event"] == "server.stop"][0]
    assert left["clean"] is False and left["resumes_at_next_start"] == [f"slow@{job['id'][:12]}"]
    from dpl.engine import Store

    done_before = [d for d in Store.open(store).list_datums("slow", job["id"]) if d["state"] == "success"]
    assert sorted(d["key"] for d in done_before) == ["in:/f0", "in:/f1"]  # the third was held at the gate

    gate.touch()
    again = Server(store, tmp_path)  # resumes the job at start
    wait_until(lambda: again.http.get(f"/api/v1/jobs/{job['id']}", params={"pipeline": "slow"}).json()["state"] == "success",
               timeout=30, what="the resumed job")
    datums = again.http.get(f"/api/v1/jobs/{job['id']}/datums", params={"pipeline": "slow"}).json()["items"]
    for d in done_before:  # finished before the stop: kept, not run again
        kept = next(x for x in datums if x["datum"] == d["datum"])
        assert kept["started"] == d["started"] < killed_at
    for path, data in files.items():
        assert again.http.get("/api/v1/repos/slow/content", params={"path": path}).content == data
    assert again.stop() == 0


# ------------------------------------------------------------------ no server needed


def test_every_error_the_server_maps_to_a_status_exists():
    from dpl.engine import errors as engine_errors
    from dpl.server.app import _STATUS_OF
    from dpl.storage import errors as storage_errors

    for name in _STATUS_OF:
        assert hasattr(storage_errors, name) or hasattr(engine_errors, name), name


def test_serve_refuses_an_address_beyond_this_machine_until_auth_exists(tmp_path):
    refused = dpl("serve", "--listen", "0.0.0.0:0", "--store", tmp_path, env=_env(tmp_path), check=False, timeout=30)
    assert refused.returncode == 1
    assert refused.stderr.startswith(b"error: dpl serve listens only on a loopback address") and b"hint: " in refused.stderr


def test_garbage_on_the_wire_is_logged_as_json_too(served):
    import socket
    from urllib.parse import urlsplit

    server, _ = served
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port)) as conn:
        conn.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        conn.recv(1000)
    assert wait_until(lambda: [e for e in server.events() if e["event"] == "log" and e["logger"].startswith("uvicorn")],
                      what="uvicorn's warning as a JSON line")


def test_a_client_that_drops_mid_upload_leaves_nothing_half_written(served):
    import socket
    from urllib.parse import urlsplit

    server, _ = served
    server.dpl("create-repo", "dropped")
    where = urlsplit(server.url)
    for route in ("/api/v1/repos/dropped/content?path=/big.bin", "/api/v1/repos/dropped/upload"):
        with socket.create_connection((where.hostname, where.port)) as conn:
            conn.sendall(f"PUT {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".replace(
                "PUT", "POST" if route.endswith("upload") else "PUT").encode() + os.urandom(300_000))
        wait_until(lambda: any(e["event"] == "request" and e["path"] == route.partition("?")[0] for e in server.events()),
                   what="the server to notice the dropped upload")
    assert server.http.get("/api/v1/repos/dropped/commits").json()["items"] == []
    assert list((server.store / "tmp" / "uploads").iterdir()) == []
    assert not [e for e in server.events() if e["event"] == "server.error"]


def test_the_server_ticks_cron_inputs_and_runs_their_jobs(served, tmp_path):
    server, _ = served
    spec = {"pipeline": {"name": "ticker"},
            "transform": {"cmd": ["sh", "-c", "ls /pfs/tick > /pfs/out/ticks.txt"]},
            "input": {"cron": {"name": "tick", "spec": "@every 1s", "overwrite": True}}}
    (tmp_path / "ticker.json").write_text(json.dumps(spec))
    server.dpl("create-pipeline", tmp_path / "ticker.json", "--no-wait")
    try:
        def ticked_jobs():
            jobs = server.http.get("/api/v1/jobs", params={"pipeline": "ticker"}).json()["items"]
            return [j for j in jobs if j["state"] == "success" and j["reason"] != "create"]

        assert len(wait_until(lambda: len(ticked_jobs()) >= 2 and ticked_jobs(), what="two cron ticks' jobs")) >= 2
        answer = server.http.get("/api/v1/repos/ticker/content", params={"path": "/ticks.txt"})
        assert answer.status_code == 200 and answer.content.strip()
        assert any(e["event"] == "cron.tick" and e["pipeline"] == "ticker" for e in server.events())
    finally:
        server.dpl("stop-pipeline", "ticker")  # the module's server goes on serving the other tests


@pytest.mark.postgres
def test_the_server_serves_a_store_whose_metadata_is_in_postgresql(postgres_db, tmp_path):
    store = tmp_path / "store"
    dpl("init", store, "--no-fsync", "--metadata", postgres_db, env=_env(tmp_path))
    server = Server(store, tmp_path)
    try:
        server.http.post("/api/v1/repos", json={"name": "words"}).raise_for_status()
        server.http.post("/api/v1/pipelines", json={"spec": json.dumps(SPEC)}).raise_for_status()
        server.http.put("/api/v1/repos/words/content", params={"path": "/pg.txt"}, content=b"postgres\n").raise_for_status()
        wait_until(lambda: server.http.get("/api/v1/repos/upper/content", params={"path": "/pg.txt"}).status_code == 200,
                   what="the pipeline's output")
        assert server.dpl("get-file", "upper@master:/pg.txt").stdout == b"POSTGRES\n"
    finally:
        assert server.stop() == 0


def test_a_job_can_be_watched_live_as_server_sent_events(served, tmp_path):
    server, _ = served
    spec = {"pipeline": {"name": "watched"}, "parallelism_spec": {"constant": 1},
            "transform": {"cmd": ["sh", "-c", "sleep 0.4; cp /pfs/src/* /pfs/out/"]},
            "input": {"pfs": {"repo": "src", "glob": "/*"}}}
    server.dpl("create-repo", "src")
    (tmp_path / "watched.json").write_text(json.dumps(spec))
    server.dpl("create-pipeline", tmp_path / "watched.json", "--no-wait")
    commit = server.http.post("/api/v1/repos/src/upload", content=_tar({f"/w{i}": b"w" for i in range(3)})).json()
    events = []
    with server.http.stream("GET", f"/api/v1/jobs/{commit['id']}/events", params={"pipeline": "watched"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    assert events[-1]["state"] == "success" and events[-1]["processed"] == 3
    assert len(events) >= 2 and events[0]["state"] in ("created", "running")  # seen before it ended, then as it went
    assert server.http.get("/api/v1/jobs/ffffffff/events").status_code == 404


def _tar(files: dict) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_open_commits_branches_and_deletes_through_the_server(served):
    """What tests/test_repos.py asserts of the embedded store, through the server
    (the CLI for the commands, the API for checking what they did)."""
    server, _ = served
    door, api = server.dpl, server.http
    door("create-repo", "both")
    opened = door("start-commit", "both@master").stdout.decode().strip()
    assert b"added to open commit" in door("put-file", "both@master:/a.txt", "-", input=b"a").stderr
    api.put("/api/v1/repos/both/content", params={"path": "/b.txt"}, content=b"b").raise_for_status()
    assert api.get("/api/v1/repos/both/content", params={"path": "/a.txt"}).status_code == 404  # not visible until finished
    assert f"finished both@{opened}".encode() in door("finish-commit", "both@master").stderr
    door("create-branch", "both@dev", "--head", "master")
    assert sorted(b["branch"] for b in api.get("/api/v1/repos/both/branches").json()["items"]) == ["dev", "master"]
    door("delete-file", "both@master:/a.txt")
    assert [f["path"] for f in api.get("/api/v1/repos/both/files").json()["items"]] == ["/b.txt"]
    assert api.get("/api/v1/repos/both/content", params={"path": "/a.txt", "ref": "dev"}).content == b"a"  # dev kept the first commit
    commits = api.get("/api/v1/repos/both/commits", params={"branch": "master"}).json()["items"]
    assert len(commits) == 2 and commits[1]["id"] == opened and commits[1]["files"] == 2
    door("delete-branch", "both@dev")
    assert [b["branch"] for b in api.get("/api/v1/repos/both/branches").json()["items"]] == ["master"]
    door("delete-repo", "both")
    gone = door("inspect-repo", "both", check=False)
    assert gone.returncode == 1 and gone.stderr.startswith(b"error: Repo 'both' does not exist.")


def test_newest_first_listings_page_steadily_while_new_commits_arrive(served):
    server, _ = served
    server.http.post("/api/v1/repos", json={"name": "steady"}).raise_for_status()
    made = [server.http.put("/api/v1/repos/steady/content", params={"path": f"/f{i}"}, content=b"x").json()["id"] for i in range(5)]
    first = server.http.get("/api/v1/repos/steady/commits", params={"limit": 2}).json()
    server.http.put("/api/v1/repos/steady/content", params={"path": "/late"}, content=b"y").raise_for_status()
    ids, cursor = [c["id"] for c in first["items"]], first["next_cursor"]
    while cursor:
        answer = server.http.get("/api/v1/repos/steady/commits", params={"limit": 2, "cursor": cursor}).json()
        ids, cursor = ids + [c["id"] for c in answer["items"]], answer["next_cursor"]
    assert ids == made[::-1]


def test_workers_run_independent_pipelines_side_by_side(tmp_path):
    from dpl.engine import Store

    store = tmp_path / "store"
    s = Store.init(store, durable=False)
    for name in ("left", "right"):
        s.create_repo(f"{name}_in")
        s.create_pipeline(json.dumps({"pipeline": {"name": name}, "transform": {"cmd": ["sh", "-c", "sleep 1; cp /pfs/in/* /pfs/out/"]},
                                      "input": {"pfs": {"repo": f"{name}_in", "glob": "/*", "name": "in"}}}))
    s.run_jobs()  # the empty first jobs, out of the way
    s.close()
    server = Server(store, tmp_path, "--workers", "2")
    try:
        for name in ("left", "right"):
            server.http.put(f"/api/v1/repos/{name}_in/content", params={"path": "/x"}, content=name.encode()).raise_for_status()

        def done():
            jobs = [j for j in server.http.get("/api/v1/jobs").json()["items"] if j["reason"] == "commit"]
            return len(jobs) == 2 and all(j["state"] == "success" for j in jobs) and jobs

        left, right = sorted(wait_until(done, what="both jobs"), key=lambda j: j["pipeline"])
        assert left["started"] < right["finished"] and right["started"] < left["finished"]  # they overlapped
        assert server.http.get("/healthz").json()["workers"] == 2
    finally:
        assert server.stop() == 0


# The repo, pipeline and provenance suites run through a server too: their
# "served" variants (tests/conftest.py, SERVED_SUITES).


def test_dpl_connect_is_the_python_sdk_with_the_stores_methods(served):
    import dpl as sdk
    from dpl.engine import Store
    from dpl.storage.errors import DplError

    server, _ = served
    store = sdk.connect(server.url)
    store.create_repo("sdk")
    commit = store.put_bytes("sdk", "master", {"/a.txt": b"alpha", "/b/c.txt": b"gamma"})
    assert store.resolve_commit("sdk", "master").id == commit.id and commit.state == "finished"
    assert store.read_file("sdk", "master", "/b/c.txt") == b"gamma"
    assert [r["path"] for r in store.list_files("sdk", "master", recursive=True) if r["type"] == "file"] == ["/a.txt", "/b/c.txt"]
    assert "sdk" in [r["name"] for r in store.list_repos()]
    with pytest.raises(DplError, match="sdk"):  # a refusal is the embedded Store's exception, with its sentence
        store.create_repo("sdk")
    # One interface, two doors: every user-facing method of the embedded Store is on the remote one.
    for name in ("create_repo", "list_repos", "put_files", "put_bytes", "read_file", "list_files", "delete_files", "start_commit",
                 "finish_commit", "create_pipeline", "list_jobs", "inspect_job", "list_datums", "file_provenance", "dag"):
        assert callable(getattr(Store, name)) and callable(getattr(store, name)), name
    store.close()
