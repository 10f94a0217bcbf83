"""Small operations cost what they do (issue 12): no flush of the whole disk,
no file made per write, no re-reading of the layers a writer just wrote, and
a command line that answers small commands without importing typer, with the
same bytes typer's commands print."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dpl.engine import Store, writers
from dpl.storage import index


# ------------------------------------------------------------ writers registry


def registrations(s) -> list[str]:
    directory = os.path.join(str(s.root), writers.DIR)
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def test_a_process_registers_once_and_is_no_writer_between_its_writes(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    s.put_bytes("r", "master", {"/a": b"a"})
    first = registrations(s)
    s.put_bytes("r", "master", {"/b": b"b"})
    assert registrations(s) == first and len(first) == 1  # one file for the process, kept
    assert writers.live_writers(s) == ([], [])  # idle: gc may collect anything old
    before = time.time()
    with writers.writing(s):
        with writers.writing(s):  # re-entrant
            starts, _ = writers.live_writers(s)
        assert len(writers.live_writers(s)[0]) == 1
    assert len(starts) == 1 and before - 1 <= starts[0] <= time.time()
    assert writers.live_writers(s) == ([], [])
    assert writers.live_writers(s, exclude_self=True) == ([], [])


def test_a_dead_writers_registration_is_reported_and_an_old_format_one_still_read(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    directory = os.path.join(str(s.root), writers.DIR)
    os.makedirs(directory, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    import socket

    gone = os.path.join(directory, f"{socket.gethostname()}:{dead}:deadbeef")
    open(gone, "w").close()
    old = os.path.join(directory, "elsewhere:1:cafe0000")  # another machine's writer, as dpl 0.1 wrote it
    with open(old, "w") as f:
        f.write("1234.5")
    starts, dead_files = writers.live_writers(s)
    assert starts == [1234.5] and dead_files == [gone]


def test_a_process_writing_in_another_process_is_seen_live(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    code = ("import sys, time; from dpl.engine import Store, writers; s = Store.open(sys.argv[1]);\n"
            "with writers.writing(s):\n    print('in', flush=True); sys.stdin.readline()\n"
            "print('out', flush=True); sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code, str(s.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "in\n"
        assert len(writers.live_writers(s)[0]) == 1
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "out\n"
        assert writers.live_writers(s) == ([], [])  # alive, registered, writing nothing
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert registrations(s) == []  # removed at exit


# --------------------------------------------------------------- local store


def test_sync_flushes_what_was_put_and_forgets_it(tmp_path):
    s = Store.init(tmp_path / "store")
    chunks = s.chunks
    oid = bytes(range(16))
    assert chunks.put(oid, b"data")
    assert chunks._unsynced == {chunks.local_path(oid)}
    chunks.sync()
    assert chunks._unsynced == set()
    assert not chunks.put(oid, b"data")  # reused: flushed again with the commit that refers to it
    assert chunks._unsynced == {chunks.local_path(oid)}
    os.unlink(chunks.local_path(oid))  # gone meanwhile (gc): nothing to flush, no error
    chunks.sync()
    assert chunks._unsynced == set()


# ------------------------------------------------------------- layer cache


def test_a_cached_layer_is_read_again_when_its_file_changed(tmp_path):
    s = Store.init(tmp_path / "store")
    table = index.make_table(["/a", "/b"], [1, 2], [b"x" * 16, b"y" * 16], [[], []])
    layer = index.write_layer(s.chunks, table)
    assert index.read_layer(s.chunks, layer) is table  # just written: not read back
    path = s.chunks.local_path(layer.id)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # damaged in place
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xff" * 64)
    with pytest.raises(Exception) as e:
        index.read_layer(s.chunks, layer)
    assert "dpl fsck" in str(getattr(e.value, "hint", "")) + str(e.value)
    os.unlink(path)
    with pytest.raises(Exception):
        index.read_layer(s.chunks, layer)


def test_many_small_commits_read_back_exactly(tmp_path):
    s = Store.init(tmp_path / "store")
    s.create_repo("r")
    for i in range(40):
        s.put_bytes("r", "master", {f"/d{i % 3}/f{i:02d}": b"%d" % i})
    s.delete_files("r", "master", ["/d1/"])
    head = s.resolve_commit("r", "master")
    assert len(head.layers) <= index.MAX_LAYERS
    expect = sorted(f"/d{i % 3}/f{i:02d}" for i in range(40) if i % 3 != 1)
    assert s.list_files("r", "master", recursive=True)["path"].to_pylist() == expect
    assert head.nfiles == len(expect)
    assert s.read_file("r", "master", "/d2/f38") == b"38"


# ------------------------------------------------------- the command-line fast path


def typer_dpl(*args, store) -> subprocess.CompletedProcess:
    """The same command through the typer app (cli/main.py), never the fast path."""
    env = dict(os.environ, DPL_STORE=str(store))
    code = "import sys; sys.argv[0] = 'dpl'; from dpl.cli.main import run; run()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=120)


@pytest.fixture
def two_repos(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("images", "raw pictures, é and all")
    s.create_repo("empty")
    s.put_bytes("images", "master", {"/a.png": b"x" * 5000, "/b.png": b"y"})
    s.put_bytes("images", "master", {"/c.png": b"z" * 3})
    # Three days ago, so that "LAST COMMIT" reads the same in both runs.
    import sqlite3

    db = sqlite3.connect(s.root / "meta.db")
    db.execute("UPDATE commits SET created = created - 3 * 86400, finished = finished - 3 * 86400")
    db.commit()
    db.close()
    return s


@pytest.mark.parametrize("args", [["list-repo"], ["list-repo", "-o", "json"], ["list-repo", "--output=json"],
                                  ["list-repo", "--output", "table"]])
def test_list_repo_prints_the_same_bytes_as_the_typer_command(two_repos, args):
    from dplcli import dpl

    fast, slow = dpl(*args, store=two_repos.root), typer_dpl(*args, store=two_repos.root)
    assert slow.returncode == fast.returncode == 0
    assert fast.stdout == slow.stdout and fast.stderr == slow.stderr
    assert b"images" in fast.stdout and b"empty" in fast.stdout


def test_list_repo_errors_are_the_same_sentence_and_exit_code(tmp_path):
    from dplcli import dpl

    for args in (["list-repo"], ["list-repo", "-o", "yaml"], ["list-repo", "--bogus"]):
        fast, slow = dpl(*args, store=tmp_path, check=False), typer_dpl(*args, store=tmp_path)
        assert fast.returncode == slow.returncode != 0
        assert fast.stderr == slow.stderr and fast.stdout == slow.stdout
    assert b"not a dpl store" in fast.stderr or b"not a dpl store" in dpl("list-repo", store=tmp_path, check=False).stderr


def test_list_repo_does_not_import_typer_or_pyarrow(two_repos):
    code = ("import sys; sys.argv = ['dpl', 'list-repo']\nfrom dpl.cli import run\nrun()\n"
            "print(sorted(m for m in ('typer', 'click', 'pyarrow', 'numpy', 'rich') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DPL_STORE=str(two_repos.root)))
    assert out.returncode == 0 and out.stderr.strip() == "[]" and "images" in out.stdout


def test_list_repo_with_a_server_address_is_not_answered_from_the_local_store(two_repos, tmp_path):
    from dplcli import dpl

    env = {"DPL_ADDRESS": "http://127.0.0.1:9", "XDG_CONFIG_HOME": str(tmp_path / "config")}  # nothing listens there
    out = dpl("list-repo", store=two_repos.root, env=env, check=False)
    assert out.returncode != 0 and b"images" not in out.stdout
    assert dpl("list-repo", store=two_repos.root, env=dict(env, DPL_ADDRESS="local")).stdout.count(b"images") == 1


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """A repo of 6,000 files (listings over 5,000 rows take the Arrow path) and a second commit."""
    s = Store.init(tmp_path_factory.mktemp("listed") / "store", durable=False)
    s.create_repo("r")
    s.put_bytes("r", "master", {f"/d{i % 3}/f{i:05d}.txt": b"x" * (i % 7) for i in range(6000)} | {"/top é.txt": b"top"})
    s.put_bytes("r", "master", {"/d1/f00001.txt": b"changed", "/d2/new.txt": b"new"})
    s.delete_files("r", "master", ["/d0/f00003.txt"])
    return s


@pytest.mark.parametrize("args", [
    ["list-file", "r@master"], ["list-file", "-r", "r@master"], ["list-file", "r@master:/d1", "-o", "json"],
    ["list-file", "--recursive", "--output=json", "r@master:/d2"], ["list-file", "r@master^:/d0"],
    ["diff-file", "r@master"], ["diff-file", "r@master", "r@master^^"], ["diff-file", "r@master:/d2", "-o", "json"],
    ["list-file", "r@master:/nowhere"], ["list-file", "nosuch@master"], ["diff-file", "r@nosuch"], ["list-file", "-x", "r@master"],
])
def test_list_file_and_diff_file_print_the_same_bytes_as_the_typer_commands(listed, args):
    from dplcli import dpl

    fast, slow = dpl(*args, store=listed.root, check=False), typer_dpl(*args, store=listed.root)
    assert fast.returncode == slow.returncode
    assert fast.stdout == slow.stdout and fast.stderr == slow.stderr
    if args == ["list-file", "-r", "r@master"]:
        assert fast.stdout.count(b"\n") == 1 + 6000 + 1 + 1 - 1  # a header; 6,000 files, /top, one new, one deleted


def test_a_listing_loads_neither_typer_nor_numpy(listed):
    code = ("import sys; sys.argv = ['dpl', 'list-file', '-r', 'r@master']\nfrom dpl.cli import run\nrun()\n"
            "print(sorted(m for m in ('typer', 'click', 'numpy', 'cloudpickle', 'logging') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DPL_STORE=str(listed.root)))
    assert out.returncode == 0 and out.stderr.strip() == "[]" and "/d2/new.txt" in out.stdout


def test_a_small_command_that_logs_still_says_note_though_it_never_imported_logging_to_configure_it():
    code = ("import sys\nfrom dpl.cli.fast import _errors_reported\nwith _errors_reported():\n"
            "    print('logging' in sys.modules)\n    import logging\n    logging.getLogger('dpl.engine').warning('a step %s', 'warned')\n"
            "    logging.getLogger('dpl.engine').info('not shown')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "False\n" and out.stderr == "note: a step warned\n"


def _same_but_ids(a: bytes, b: bytes) -> bool:
    import re

    hexid = re.compile(rb"[0-9a-f]{12,32}")
    return hexid.sub(b"ID", a) == hexid.sub(b"ID", b)


def test_put_file_does_what_the_typer_command_does_and_says_the_same(tmp_path):
    """The same commands, one store through the fast path and one through
    typer: the same output (commit ids aside), exit codes and files."""
    import json

    from dplcli import dpl

    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "tree" / "t.txt").write_bytes(b"tree\n")
    (src / "tree" / "sub" / "u.txt").write_bytes(b"under\n")
    spec = tmp_path / "up.json"
    spec.write_text(json.dumps({"pipeline": {"name": "up"}, "input": {"pfs": {"repo": "r", "glob": "/a.txt"}},
                                "transform": {"cmd": ["sh", "-c", "tr a-z A-Z < /pfs/r/a.txt > /pfs/out/A.TXT"]}}))
    stores = []
    for name in ("fast", "typer"):
        store = tmp_path / name
        Store.init(store, durable=False).create_repo("r")
        stores.append(store)
    steps = [
        (["put-file", "r@master:/a.txt", str(src / "a.txt")], None),
        (["put-file", "-m", "into a dir", "r@master:/dir/", str(src / "a.txt")], None),
        (["put-file", "--recursive", "r@master:/tree", str(src / "tree")], None),
        (["put-file", "r@master:/s.txt", "-"], b"from stdin\n"),
        (["put-file", "--append", "--message=more", "r@master:/s.txt", "-"], b"and more\n"),
        (["put-file", "r@master:/x.txt", str(src / "missing")], None),
        (["put-file", "nosuch@master:/x.txt", str(src / "a.txt")], None),
        (["put-file", "r@master:/t", str(src / "tree")], None),
        (["put-file", "-o", "json", "r@master:/y.txt", str(src / "a.txt")], None),
        (["put-file", "r@master:/u.txt", "http://127.0.0.1:9/u.txt"], None),  # nothing listens there
        (["create-pipeline", str(spec)], None),
        (["put-file", "--no-wait", "-x", "local", "r@master:/b.txt", str(src / "a.txt")], None),
        (["put-file", "r@master:/a.txt", str(src / "tree" / "t.txt")], None),  # runs the job the commit starts
    ]
    for args, stdin in steps:
        fast = dpl(*args, store=stores[0], input=stdin, check=False)
        slow = typer_dpl_input(args, stores[1], stdin)
        assert fast.returncode == slow.returncode, (args, fast.stderr, slow.stderr)
        assert fast.stdout == slow.stdout and _same_but_ids(fast.stderr, slow.stderr), (args, fast.stderr, slow.stderr)
    assert b"committed r@" in fast.stderr and b"job up@" in fast.stderr
    for args in (["list-file", "-r", "r@master"], ["list-file", "-r", "up@master"]):
        a, b = typer_dpl(*args, store=stores[0]), typer_dpl(*args, store=stores[1])
        assert a.returncode == 0 and a.stdout == b.stdout, args
    history = [[(c["description"], c["size"], c["files"], c["origin"]) for c in json.loads(typer_dpl("list-commit", "r@master", "-o", "json", store=s).stdout)]
               for s in stores]
    assert history[0] == history[1] and len(history[0]) == 7
    assert dpl("get-file", "up@master:/A.TXT", store=stores[0]).stdout == b"TREE\n"


def typer_dpl_input(args, store, stdin) -> subprocess.CompletedProcess:
    env = dict(os.environ, DPL_STORE=str(store))
    code = "import sys; sys.argv[0] = 'dpl'; from dpl.cli.main import run; run()"
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, env=env, timeout=300)


# --------------------------------------------------------- SQLite writers' turn


HOLD = """
import sys, time
from dpl.storage.metadata.sqlite import SqliteDatabase
db = SqliteDatabase(sys.argv[1])
with db.write() as tx:
    tx.execute("INSERT INTO meta (key, value) VALUES ('held', 'yes') ON CONFLICT (key) DO UPDATE SET value=excluded.value")
    print("in", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_writer_waits_for_another_process_s_transaction_and_not_for_a_killed_one(tmp_path):
    from dpl.storage.metadata.sqlite import SqliteDatabase

    s = Store.init(tmp_path / "store", durable=False)
    path = str(s.root / "meta.db")
    db = SqliteDatabase(path)
    for hold, kill in ((1.0, False), (60.0, True)):
        p = subprocess.Popen([sys.executable, "-c", HOLD, path, str(hold)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "in\n"
        if kill:
            p.kill()  # dies holding its turn: the kernel releases it
        start = time.monotonic()
        with db.write() as tx:
            waited = time.monotonic() - start
            assert tx.one("SELECT value FROM meta WHERE key='held'")["value"] == "yes" or kill
        p.wait(timeout=30)
        if kill:
            assert waited < 10
        else:
            assert 0.5 < waited < 30
    assert os.path.exists(path + ".writer")
