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
from dpl.storage.errors import DplError
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
    big = os.urandom(1 << 20)  # re-stored, it would grow the store 16 times more than the bound below
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


# ----------------------------------------------------------- jobs and datums

# Fails (exit 3, a line on stderr) on a file whose content starts with "bad"; copies the others.
PICKY = ["sh", "-c", "for f in /pfs/data/*; do echo \"saw $(basename $f)\"; if grep -q '^bad' $f; then echo \"cannot parse $(basename $f)\" >&2; "
         "exit 3; fi; cp $f /pfs/out/; done"]


def picky(name="p", cmd=PICKY):
    return json.dumps({"pipeline": {"name": name}, "transform": {"cmd": cmd},
                       "input": {"pfs": {"repo": "data", "glob": "/*"}}, "datum_tries": 1})


def test_failed_job_logs_restart_datum_wait_and_state(store, api):
    api.create_repo("data")
    api.put_bytes("data", "master", {"/a.txt": b"good a\n", "/b.txt": b"bad b\n", "/c.txt": b"good c\n"})
    api.create_pipeline(picky())
    [job] = api.run_jobs(api.pipeline_wave("p"))
    assert job["state"] == "failure"
    waited = dpl("wait-job", f"p@{job['id']}", store=store, check=False)
    assert waited.returncode != 0 and b"failure" in waited.stderr
    # list-commit names the failed output commit's state; get-file says whose commit it is
    rows = as_json(store, "list-commit", "p")
    assert [r["state"] for r in rows] == ["failed"]
    got = dpl("get-file", f"p@{rows[0]['id']}:/a.txt", store=store, check=False)
    assert got.returncode != 0 and b"failed job" in got.stderr and b"still open" not in got.stderr
    # logs of the pipeline's newest job, and of one datum
    out = dpl("logs", "--pipeline", "p", store=store).stdout.decode()
    assert "cannot parse b.txt" in out and "saw a.txt" in out
    bad = next(d for d in api.list_datums("p", job["id"]) if d["state"] == "failed")
    one = as_json(store, "logs", "--pipeline", "p", "--datum", bad["datum"][:12])
    assert [e["datum"] for e in one] == [bad["datum"]] and "cannot parse b.txt" in one[0]["stderr"]
    # restart-datum reruns only what failed: the two good datums are skipped
    again = dpl("restart-datum", f"p@{job['id']}", bad["datum"][:12], "--no-wait", store=store)
    assert b"restarting in job" in again.stderr
    api.run_jobs(None)
    newest = api.list_jobs("p")[0]
    assert newest["id"] != job["id"] and (newest["reason"], newest["skipped"], newest["failed"]) == ("restart-datum", 2, 1)
    dpl("restart-datum", f"p@{newest['id']}", "--all-failed", "--no-wait", store=store)  # still bad: all its failed datums again
    assert [j["reason"] for j in api.list_jobs("p")][:2] == ["restart-datum", "restart-datum"] and len(api.list_jobs("p")) == 3
    good = next(d for d in api.list_datums("p", job["id"]) if d["state"] == "success")
    refused = dpl("restart-datum", f"p@{job['id']}", good["datum"][:12], store=store, check=False)
    assert refused.returncode != 0 and b"did not fail" in refused.stderr


def test_stop_delete_rerun_and_follow_logs(store, api):
    api.create_repo("data")
    api.put_bytes("data", "master", {"/a.txt": b"a\n", "/b.txt": b"b\n"})
    api.create_pipeline(picky())
    first = api.pipeline_wave("p")
    dpl("stop-job", f"p@{first}", store=store)  # created, never run: killed at once
    killed = api.inspect_job("p", first)
    assert killed["state"] == "killed" and killed["output_commit"] == first  # its output commit, finished failed
    assert [(c.id, c.state) for c in api.list_commits("p")] == [(first, "failed")]
    assert api.run_jobs(None) == []
    again = dpl("stop-job", f"p@{first}", store=store, check=False)
    assert again.returncode != 0 and b"already finished" in again.stderr
    dpl("delete-job", f"p@{first}", store=store)
    assert api.list_jobs("p") == [] and api.list_commits("p") == []  # the failed commit only it explained goes with it
    # rerun-pipeline: a job over the current inputs; logs -f follows it while it runs here
    rerun = dpl("rerun-pipeline", "p", "--no-wait", store=store)
    wave = api.pipeline_wave("p")
    assert wave[:12].encode() in rerun.stderr
    env = dict(os.environ, DPL_STORE=str(store))
    follow = subprocess.Popen([DPL, "logs", "-f", "--job", f"p@{wave}", "-o", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        [job] = api.run_jobs(wave)
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert job["state"] == "success" and job["processed"] == 2
    assert sorted(json.loads(line)["stdout"].strip() for line in out.splitlines()) == ["saw a.txt", "saw b.txt"]
    # --reprocess runs every datum again (a new version of the same spec); without, all are skipped
    dpl("rerun-pipeline", "p", store=store)
    assert (api.list_jobs("p")[0]["skipped"], api.list_jobs("p")[0]["processed"]) == (2, 0)
    dpl("rerun-pipeline", "p", "--reprocess", store=store)
    assert api.list_jobs("p")[0]["processed"] == 2 and api.inspect_pipeline("p")["version"] == 2
    # delete-commit of that output says which wave makes it again; delete-job of a succeeded job takes its output too
    deleted = dpl("delete-commit", "p@master", store=store).stderr.decode()
    recompute = deleted.split("recompute wave ")[1].split()[0]
    [remade] = api.run_jobs(recompute)
    assert remade["state"] == "success" and api.resolve_commit("p", "master").id == remade["output_commit"]
    gone = dpl("delete-job", f"p@{remade['id']}", store=store).stderr.decode()
    assert f"deleted commit p@{remade['output_commit']}" in gone
    assert all(j["id"] != remade["id"] for j in api.list_jobs("p"))


def test_validate_and_edit_pipeline(store, api, tmp_path):
    api.create_repo("data")
    api.put_bytes("data", "master", {"/a.txt": b"a\n"})
    spec = tmp_path / "p.json"
    spec.write_text(picky())
    ok = dpl("validate-pipeline", spec, store=store)
    assert b"would create" in ok.stderr
    assert api.list_pipelines() == []  # validating changes nothing
    spec.write_text(json.dumps({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "nope", "glob": "/*"}}}))
    bad = dpl("validate-pipeline", spec, store=store, check=False)
    assert bad.returncode != 0 and b"nope" in bad.stderr and b"Traceback" not in bad.stderr
    api.create_pipeline(picky())
    api.run_jobs(api.pipeline_wave("p"))
    editor = tmp_path / "editor.sh"  # as a person would: change the step, save, quit
    editor.write_text("#!/bin/sh\nsed -i 's/saw /seen /' \"$1\"\n")
    editor.chmod(0o755)
    dpl("edit-pipeline", "p", store=store, env={"EDITOR": str(editor)})
    info = api.inspect_pipeline("p")
    assert info["version"] == 2 and "seen " in json.dumps(info["spec"])
    assert api.list_jobs("p")[0]["state"] == "success"
    breaker = tmp_path / "breaker.sh"
    breaker.write_text("#!/bin/sh\necho '{\"pipeline\": {\"name\": \"p\"}, \"transform\": {}, \"bogus\": 1}' > \"$1\"\n")
    breaker.chmod(0o755)
    renamer = tmp_path / "renamer.sh"
    renamer.write_text("#!/bin/sh\nsed -i 's/\"p\"/\"q\"/' \"$1\"\n")
    renamer.chmod(0o755)
    renamed = dpl("edit-pipeline", "p", store=store, env={"EDITOR": str(renamer)}, check=False)
    assert renamed.returncode != 0 and b"must stay one spec of pipeline 'p'" in renamed.stderr
    broken = dpl("edit-pipeline", "p", store=store, env={"EDITOR": str(breaker)}, check=False)
    assert broken.returncode != 0 and b"spec.transform" in broken.stderr and api.inspect_pipeline("p")["version"] == 2


# ------------------------------------------------------------ transactions


def test_a_transaction_lands_commits_and_a_pipeline_together_or_not_at_all(store, api, tmp_path):
    api.create_repo("data")
    api.create_repo("labels")
    base = api.put_bytes("data", "master", {"/old.txt": b"old\n"})
    txn = dpl("start-transaction", store=store).stdout.decode().strip()
    with pytest.raises(DplError, match="already open"):
        api.start_transaction()
    # separate dpl calls join it: two repos written, a pipeline created
    (tmp_path / "a.txt").write_text("new a\n")
    (tmp_path / "l.txt").write_text("label\n")
    dpl("put-file", "data@master:/a.txt", tmp_path / "a.txt", store=store)
    dpl("put-file", "labels@master:/l.txt", tmp_path / "l.txt", store=store)
    spec = tmp_path / "p.json"
    spec.write_text(picky(cmd=["sh", "-c", "cp /pfs/data/* /pfs/out/"]))
    queued = dpl("create-pipeline", spec, store=store)
    assert b"queued in transaction" in queued.stderr
    # nothing is visible before it finishes
    assert api.resolve_commit("data", "master").id == base.id and api.list_pipelines() == []
    assert api.list_branches("labels") == [] or api.list_branches("labels")[0]["head"] is None
    info = as_json(store, "inspect-transaction")
    assert info["id"] == txn and sorted(info["commits"]) == ["data@master", "labels@master"]
    assert info["ops"] == [{"kind": "create-pipeline", "pipeline": "p"}]
    with pytest.raises(DplError, match="lands with the transaction"):
        api.finish_commit("data", "master")
    dpl("finish-transaction", store=store)
    # all of it at once: one global id across repos, the pipeline's first job in that wave
    assert {c.repo for c in api.commits_with_id(txn)} >= {"data", "labels"}
    assert api.resolve_commit("labels", "master").id == txn
    [job] = api.list_jobs("p")
    assert job["id"] == txn and job["state"] == "success"
    assert sorted(r["path"] for r in api.list_files("p", "master").to_pylist()) == ["/a.txt", "/old.txt"]
    # not at all: a transaction whose commit would collide rolls everything back, and stays open
    txn2 = api.start_transaction()
    api.put_bytes("labels", "master", {"/more.txt": b"more\n"})
    api.put_bytes("data", "master", {"/a.txt/inside": b"x\n"})  # /a.txt is a file: a path collision at landing
    failed = dpl("finish-transaction", store=store, check=False)
    assert failed.returncode != 0 and b"both a file and a directory" in failed.stderr
    assert api.resolve_commit("labels", "master").id == txn  # labels did not move either
    assert api.inspect_transaction()["id"] == txn2
    dropped = dpl("delete-transaction", store=store)
    assert b"dropped open commits" in dropped.stderr and api.open_commit("labels", "master") is None


# ------------------------------------------------------------- through a server


def test_read_commands_work_through_dpl_serve(store, api, tmp_path):
    from test_serve import Server

    api.create_repo("data")
    api.put_bytes("data", "master", {"/a.txt": b"a\n"})
    api.create_pipeline(picky())
    [job] = api.run_jobs(api.pipeline_wave("p"))
    api.close()
    server = Server(store, tmp_path)
    try:
        branch = json.loads(server.dpl("inspect-branch", "data@master", "-o", "json").stdout)
        assert branch["readers"] == ["p"] and branch["head"] == api.resolve_commit("data", "master").id
        f = json.loads(server.dpl("inspect-file", "data@master:/a.txt", "-o", "json").stdout)
        assert (f["type"], f["size"]) == ("file", 2)
        assert b"saw a.txt" in server.dpl("logs", "--pipeline", "p").stdout
        assert b"success" in server.dpl("wait-job", f"p@{job['id']}").stderr
        # writes on jobs too: a rerun (the server's scheduler runs it), then deleting that job
        rerun = server.dpl("rerun-pipeline", "p").stderr.decode()
        wave = rerun.split("in job ")[1].split()[0]
        assert "success: 0 datums processed, 1 skipped" in rerun
        server.dpl("delete-job", f"p@{wave}")
        assert not [j for j in json.loads(server.dpl("list-job", "p", "-o", "json").stdout) if j["id"].startswith(wave)]
        server.dpl("copy-file", "data@master:/a.txt", "data@master:/b.txt")
        f = json.loads(server.dpl("inspect-file", "data@master:/b.txt", "-o", "json").stdout)
        assert (f["type"], f["size"], f["chunks"]) == ("file", 2, 1)
        server.dpl("create-branch", "data@ready", "--trigger", "master", "--trigger-commits", "1")
        assert json.loads(server.dpl("inspect-branch", "data@ready", "-o", "json").stdout)["trigger"]["commits"] == 1
        spec = tmp_path / "q.json"
        spec.write_text(picky("q"))
        assert json.loads(server.dpl("validate-pipeline", spec, "-o", "json").stdout)[0]["action"] == "create"
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i 's/saw /seen /' \"$1\"\n")
        editor.chmod(0o755)
        dpl("--address", server.url, "edit-pipeline", "p", env={**server.env, "EDITOR": str(editor)})
        assert "seen " in json.dumps(json.loads(server.dpl("inspect-pipeline", "p", "-o", "json").stdout)["spec"])
        refused = server.dpl("start-transaction", check=False)
        assert refused.returncode != 0 and b"not offered through a dpl server" in refused.stderr
    finally:
        server.stop()
