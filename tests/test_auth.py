"""Access control of `dpl serve`: users, tokens, per-repo roles, admin, creators' rights, the audit log.

One real server (test_serve's `Server`) over a store with auth on, set up
in-process (a CLI call per user would cost more than the tests); the CLI
and httpx then act as the users, each with their own token.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import httpx
import pytest

from dplcli import dpl
from test_serve import Server, _env, wait_until

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "pipeline": {"name": "copy"},
    "transform": {"cmd": ["sh", "-c", "cp -r /pfs/a/* /pfs/out/ 2>/dev/null || true"]},
    "input": {"pfs": {"repo": "a", "glob": "/*"}},
}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    from dpl.engine import Store

    base = tmp_path_factory.mktemp("team")
    store = base / "store"
    s = Store.init(store, durable=False)
    tokens = {"admin": s.auth.activate("admin")["token"]}
    for name in ("alice", "bob", "carol"):
        s.auth.create_user(name)
        tokens[name] = s.auth.create_token(name)["token"]
    for repo in ("a", "b"):
        s.create_repo(repo)
    s.auth.grant("a", "alice", "writer")
    s.auth.grant("b", "alice", "reader")
    s.auth.grant("a", "bob", "reader")
    s.auth.grant("a", "carol", "reader")
    s.close()
    server = Server(store, base)
    clients = {name: httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {t}"}) for name, t in tokens.items()}
    yield server, tokens, clients, base
    for c in clients.values():
        c.close()
    assert server.stop() == 0


def as_user(server, tokens, name, *args, **kw):
    """The real CLI, acting on the server as `name` (DPL_TOKEN)."""
    return dpl("--address", server.url, *args, env={**server.env, "DPL_TOKEN": tokens[name]}, **kw)


def test_roles_allow_and_refuse_exactly(team, tmp_path):
    server, tokens, http, _ = team
    (tmp_path / "f.txt").write_bytes(b"hello")
    as_user(server, tokens, "alice", "put-file", "a@master:/f.txt", tmp_path / "f.txt")  # writer of a
    refused = as_user(server, tokens, "bob", "put-file", "a@master:/g.txt", tmp_path / "f.txt", check=False)  # reader of a
    assert refused.returncode == 1
    assert refused.stderr.startswith(b"error: User 'bob' needs the writer role on repo 'a' to put files into it; they have reader.\n")
    assert b"Traceback" not in refused.stderr
    assert as_user(server, tokens, "bob", "get-file", "a@master:/f.txt").stdout == b"hello"  # but reads it
    answer = http["alice"].put("/api/v1/repos/b/content", params={"path": "/x"}, content=b"x")  # reader of b only
    assert answer.status_code == 403 and answer.json()["error"] == "User 'alice' needs the writer role on repo 'b' to put files into it; they have reader."
    assert http["bob"].get("/api/v1/repos/b/files").status_code == 403  # no role on b at all
    assert [r["name"] for r in http["bob"].get("/api/v1/repos").json()["items"]] == ["a"]  # lists only what bob may read
    assert http["bob"].get("/api/v1/secrets").status_code == 403
    assert http["alice"].post("/api/v1/auth/users", json={"name": "mallory", "admin": True}).status_code == 403
    # Without a token, or with a wrong one: 401 in one sentence, whatever the route.
    anonymous = server.http.get("/api/v1/repos")
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "Unauthenticated"
    forged = tokens["bob"][:-4] + "AAAA"
    assert server.http.get("/api/v1/repos", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    for_bob = http["admin"].post("/api/v1/auth/tokens", json={"user": "bob", "expires_in": -1}).json()
    expired = server.http.get("/api/v1/repos", headers={"Authorization": f"Bearer {for_bob['token']}"})
    assert expired.status_code == 401 and expired.json()["error"] == "The token has expired."
    spare = http["admin"].post("/api/v1/auth/tokens", json={"user": "bob"}).json()
    assert server.http.get("/api/v1/repos", headers={"Authorization": f"Bearer {spare['token']}"}).status_code == 200
    assert http["bob"].delete(f"/api/v1/auth/tokens/{spare['id']}").status_code == 204  # his own: he may revoke it
    assert server.http.get("/api/v1/repos", headers={"Authorization": f"Bearer {spare['token']}"}).status_code == 401
    assert http["bob"].post("/api/v1/auth/tokens", json={"user": "alice"}).status_code == 403


def test_owner_manages_the_pipeline_and_admin_can_all(team, tmp_path):
    server, tokens, http, _ = team
    spec = tmp_path / "copy.json"
    spec.write_text(json.dumps(SPEC))
    as_user(server, tokens, "carol", "create-pipeline", spec, "--no-wait")  # reader of a: may build on it, owns the output
    assert json.loads(as_user(server, tokens, "carol", "auth", "whoami", "-o", "json").stdout)["roles"] == {"a": "reader", "copy": "owner"}
    refused = as_user(server, tokens, "bob", "delete-pipeline", "copy", check=False)
    assert refused.returncode == 1 and b"needs the owner role on repo 'copy' to delete its pipeline" in refused.stderr
    secretive = dict(SPEC, pipeline={"name": "leaky"}, transform={**SPEC["transform"], "secrets": [{"name": "db", "key": "pw", "env_var": "PW"}]})
    refused = http["carol"].post("/api/v1/pipelines", json={"spec": json.dumps(secretive)})
    assert refused.status_code == 403 and refused.json()["error"] == "User 'carol' needs the admin role to create a pipeline that reads secrets."
    as_user(server, tokens, "carol", "stop-pipeline", "copy")
    as_user(server, tokens, "carol", "delete-pipeline", "copy")
    assert http["admin"].get("/api/v1/pipelines/copy").status_code == 404
    # admin: repos of anyone's, users, the audit log
    assert http["admin"].put("/api/v1/repos/b/content", params={"path": "/by-admin"}, content=b"x").status_code == 200
    assert http["admin"].post("/api/v1/auth/users", json={"name": "dave"}).status_code == 201
    users = {u["name"] for u in http["admin"].get("/api/v1/auth/users").json()["items"]}
    assert {"admin", "alice", "bob", "carol", "dave"} <= users


def test_a_pipeline_whose_creator_lost_read_gets_an_unrunnable_job(team, tmp_path):
    server, tokens, http, _ = team
    spec = dict(SPEC, pipeline={"name": "carols"})
    assert http["carol"].post("/api/v1/pipelines", json={"spec": json.dumps(spec)}).status_code == 201
    wait_until(lambda: all(j["state"] == "success" for j in http["carol"].get("/api/v1/jobs", params={"pipeline": "carols"}).json()["items"]),
               what="the pipeline's first job")
    assert http["admin"].delete("/api/v1/repos/a/roles/carol").status_code == 204
    commit = http["alice"].put("/api/v1/repos/a/content", params={"path": "/later.txt"}, content=b"later").json()
    job = wait_until(lambda: [j for j in http["admin"].get("/api/v1/jobs", params={"pipeline": "carols"}).json()["items"]
                              if j["id"] == commit["id"] and j["state"] not in ("created", "running")], what="the job to end")[0]
    assert job["state"] == "unrunnable"
    assert "its creator 'carol' lost the reader role on input repo 'a'" in job["error"]
    assert http["admin"].get("/api/v1/repos/carols/content", params={"path": "/later.txt"}).status_code == 404


def test_tokens_are_stored_only_as_hashes(team):
    server, tokens, _, _ = team
    db = sqlite3.connect(server.store / "meta.db")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM tokens").fetchall()
    assert len(rows) >= 4
    stored = " ".join(str(v) for r in rows for v in tuple(r))
    for token in tokens.values():
        secret = token.split("_")[2]
        assert token not in stored and secret not in stored
    assert all(r["hash"].startswith("scrypt$") for r in rows)
    db.close()


def test_writes_leave_audit_rows_readable_by_admins_only(team):
    server, _, http, _ = team
    http["alice"].put("/api/v1/repos/a/content", params={"path": "/audited.txt"}, content=b"a").raise_for_status()
    http["bob"].put("/api/v1/repos/a/content", params={"path": "/nope.txt"}, content=b"b")
    # a row is written after its response goes out: wait for both writers' rows
    def both():
        log = http["admin"].get("/api/v1/auth/audit").json()
        users = {e["user"] for e in log if "audited.txt" in e["target"] or "nope.txt" in e["target"]}
        return log if {"alice", "bob"} <= users else None

    log = wait_until(both, what="alice's and bob's audit rows")
    done = [e for e in log if e["user"] == "alice" and e["action"] == "PUT /api/v1/repos/a/content" and "audited.txt" in e["target"]]
    assert done and done[0]["status"] == 200
    assert [e["status"] for e in log if e["user"] == "bob" and "nope.txt" in e["target"]] == [403]
    assert http["alice"].get("/api/v1/auth/audit").status_code == 403


def test_login_saves_the_token_for_that_address_only_readable_by_its_owner(team, tmp_path):
    server, tokens, _, _ = team
    env = _env(tmp_path)
    connected = dpl("connect", server.url, env=env)  # before logging in: the server answers 401, and is a dpl server
    assert b"Log in with `dpl auth login`" in connected.stderr
    dpl("auth", "login", env=env, input=tokens["bob"] + "\n")
    config = tmp_path / "config" / "dpl" / "config.json"
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert json.loads(config.read_text())["tokens"] == {server.url: tokens["bob"]}
    assert dpl("auth", "whoami", env=env).stdout.startswith(b"bob: a: reader")
    assert dpl("--address", "http://127.0.0.1:9", "auth", "whoami", env=env, check=False).stderr.startswith(b"error: Cannot reach")
    bad = dpl("--address", server.url, "auth", "login", "dpl_0000_wrong", env=env, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith(b"error: The token is not valid on this server")


def test_every_api_route_has_an_access_rule():
    from dpl.engine import Store  # noqa: F401  (the app imports the engine)
    from dpl.server import api_auth, api_data, api_pipelines, api_uploads
    from dpl.server.guard import RULES

    for router in (api_data.router, api_pipelines.router, api_auth.router, api_uploads.router):
        for route in router.routes:
            for method in route.methods:
                assert (method, route.path) in RULES, (method, route.path)


def test_beyond_loopback_serve_needs_auth(tmp_path):
    bare = tmp_path / "bare"
    dpl("init", bare, "--no-fsync", env=_env(tmp_path))
    refused = dpl("serve", "--listen", "0.0.0.0:0", "--store", bare, env=_env(tmp_path), check=False, timeout=30)
    assert refused.returncode == 1 and b"dpl auth activate" in refused.stderr and b"Traceback" not in refused.stderr
    token = dpl("auth", "activate", "--store", bare, env=_env(tmp_path)).stdout.decode().strip()
    assert token.startswith("dpl_")
    server = Server(bare, tmp_path, "--listen", "0.0.0.0:0")  # the later --listen wins
    try:
        assert server.http.get("/api/v1/repos", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert server.http.get("/api/v1/repos").status_code == 401
    finally:
        assert server.stop() == 0


def test_provenance_commands_go_through_the_server_and_answer_as_embedded(team, tmp_path):
    server, tokens, http, base = team
    http["admin"].post("/api/v1/repos", json={"name": "prov_in"}).raise_for_status()
    spec = {"pipeline": {"name": "prov_out"}, "transform": {"cmd": ["sh", "-c", "cp /pfs/prov_in/* /pfs/out/"]},
            "input": {"pfs": {"repo": "prov_in", "glob": "/*"}}}
    http["admin"].post("/api/v1/pipelines", json={"spec": json.dumps(spec)}).raise_for_status()
    http["admin"].put("/api/v1/repos/prov_in/content", params={"path": "/x.txt"}, content=b"x").raise_for_status()
    wait_until(lambda: http["admin"].get("/api/v1/repos/prov_out/content", params={"path": "/x.txt"}).status_code == 200,
               what="the pipeline's output")
    job = http["admin"].get("/api/v1/jobs", params={"pipeline": "prov_out"}).json()["items"][0]["id"]
    local = {**_env(tmp_path), "DPL_ADDRESS": "local", "DPL_STORE": str(server.store)}
    for args in (["provenance", "prov_out@master:/x.txt", "-o", "json"], ["subvenance", "prov_in@master:/x.txt", "-o", "json"],
                 ["why", f"prov_out@{job}", "-o", "json"], ["draw-dag"]):
        remote = as_user(server, tokens, "admin", *args)
        assert remote.stdout == dpl(*args, env=local).stdout, args
        assert remote.stdout.strip()
    # Through the server, provenance is read with the reader's rights.
    refused = as_user(server, tokens, "bob", "provenance", "prov_out@master:/x.txt", check=False)
    assert refused.returncode == 1 and b"needs the reader role on repo 'prov_out' to read its provenance" in refused.stderr


def test_with_auth_on_the_console_needs_a_signed_in_user(team):
    server, tokens, http, _ = team
    assert server.http.get("/").status_code == 401
    assert http["bob"].get("/").status_code == 200  # each page then checks bob's roles on what it shows
    assert http["admin"].get("/").status_code == 200
    login = server.http.get("/", params={"token": tokens["admin"]}, follow_redirects=False)
    assert login.status_code == 303 and "dpl_token=" in login.headers["set-cookie"] and "HttpOnly" in login.headers["set-cookie"]
    with httpx.Client(base_url=server.url, cookies={"dpl_token": tokens["admin"]}) as browser:
        assert browser.get("/").status_code == 200
    assert server.http.get("/healthz").status_code == 200  # probes stay open


@pytest.mark.postgres
def test_users_tokens_roles_and_audit_on_postgresql(postgres_db, tmp_path):
    from dpl.engine import Store
    from dpl.engine.auth import Forbidden, Unauthenticated

    s = Store.init(tmp_path / "store", durable=False, metadata=postgres_db)
    try:
        admin = s.auth.authenticate(s.auth.activate("root")["token"])
        assert admin.admin and s.auth.active()
        s.auth.create_user("eve")
        token = s.auth.create_token("eve", expires_in=3600)
        eve = s.auth.authenticate(token["token"])
        s.create_repo("pg")
        with pytest.raises(Forbidden):
            s.auth.require(eve, "pg", "reader", "read it")
        s.auth.grant("pg", "eve", "writer")
        s.auth.require(eve, "pg", "writer", "put files into it")
        s.auth.audit(eve, "PUT /api/v1/repos/pg/content", "path=/x", 200)
        assert [(e["user"], e["status"]) for e in s.auth.audit_log()] == [("eve", 200)]
        s.auth.revoke_token(token["id"])
        with pytest.raises(Unauthenticated):
            s.auth.authenticate(token["token"])
    finally:
        s.close()


def test_tls_with_a_self_signed_certificate(tmp_path, monkeypatch):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    store = tmp_path / "store"
    dpl("init", store, "--no-fsync", env=_env(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # this process's httpx (the helper's client) trusts the certificate
    server = Server(store, tmp_path, "--tls-cert", cert, "--tls-key", key)
    try:
        assert server.url.startswith("https://")
        server.dpl("create-repo", "secure")  # its env has SSL_CERT_FILE too
        assert [r["name"] for r in server.http.get("/api/v1/repos").json()["items"]] == ["secure"]
        untrusted = dpl("--address", server.url, "list-repo", env={**_env(tmp_path), "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
                        check=False)
        assert untrusted.returncode == 1 and untrusted.stderr.startswith(b"error: Cannot reach the dpl server")
    finally:
        assert server.stop() == 0
    half = dpl("serve", "--store", store, "--tls-cert", cert, env=_env(tmp_path), check=False)
    assert half.returncode == 1 and half.stderr.startswith(b"error: TLS needs both --tls-cert and --tls-key")
