"""`dpl mount`: a commit as a directory, through real FUSE and a real `dpl mount` process.

Each test starts `dpl mount` as a user would (a subprocess in its own
session, as a terminal's job) and looks at the mount with plain file calls.
Where FUSE cannot be had (no /dev/fuse, no libfuse3, no fusermount3), the
tests skip saying why, and fail in CI.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import struct
import subprocess
import time
from contextlib import contextmanager

import pytest

from conftest import service_unavailable
from dplcli import DPL, dpl


@pytest.fixture(scope="module")
def fuse():
    """FUSE as `dpl mount` needs it: the device, libfuse3 (through mfusepy) and fusermount3."""
    if not os.path.exists("/dev/fuse"):
        service_unavailable("FUSE", "/dev/fuse does not exist in this container (run it with --device /dev/fuse, or modprobe fuse)")
    if shutil.which("fusermount3") is None:
        service_unavailable("FUSE", "fusermount3 is not installed (apt-get install fuse3)")
    try:
        import mfusepy  # noqa: F401  (loads libfuse)
    except (ImportError, OSError) as e:
        service_unavailable("FUSE", f"mfusepy cannot load libfuse: {e} (pip install 'dpl[mount]', apt-get install fuse3)")


@pytest.fixture
def repo(store, fuse):
    """A store with repo `data`: a.txt, dir/b.csv and dir/sub/c.bin on master."""
    from dpl.engine import Store

    s = Store.open(store)
    try:
        s.create_repo("data")
        s.put_bytes("data", "master", {"/a.txt": b"hello\n", "/dir/b.csv": b"x,y\n1,2\n", "/dir/sub/c.bin": bytes(range(256)) * 40})
    finally:
        s.close()
    return store


@contextmanager
def mounted(store, target, where, *args, stop=signal.SIGINT, env=None):
    """`dpl mount TARGET WHERE ARGS` in its own session, until `stop` reaches its process group."""
    os.makedirs(where, exist_ok=True)
    proc = subprocess.Popen([DPL, "mount", target, str(where), *args], env={**os.environ, "DPL_STORE": str(store), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(where):
            if proc.poll() is not None:
                pytest.fail(f"dpl mount exited {proc.returncode}: {proc.stderr.read().decode()}")
            assert time.monotonic() < deadline, "dpl mount did not mount within 20 s"
            time.sleep(0.02)
        proc.said = ""
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, stop)  # as a terminal sends Ctrl-C: to the whole job
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            if os.path.ismount(where):
                subprocess.run(["fusermount3", "-uz", str(where)], check=False)
        proc.said = proc.stderr.read().decode()


@contextmanager
def engine(store):
    from dpl.engine import Store

    s = Store.open(store)
    try:
        yield s
    finally:
        s.close()


def commits(store) -> int:
    with engine(store) as s:
        return len(s.list_commits("data", "master"))


def read(store, path: str) -> bytes:
    with engine(store) as s:
        return s.read_file("data", "master", path)


def put(store, files: dict) -> None:
    with engine(store) as s:
        s.put_bytes("data", "master", files)


def test_a_mounted_commit_reads_back_its_bytes_and_lists_its_directories(repo, tmp_path):
    mnt = tmp_path / "mnt"
    with engine(repo) as s:
        finished = s.resolve_commit("data", "master").finished
    with mounted(repo, "data@master", mnt):
        assert sorted(os.listdir(mnt)) == ["a.txt", "dir"]
        assert sorted(os.listdir(mnt / "dir")) == ["b.csv", "sub"]
        assert (mnt / "a.txt").read_bytes() == b"hello\n"
        assert (mnt / "dir" / "b.csv").read_bytes() == b"x,y\n1,2\n"
        with open(mnt / "dir" / "sub" / "c.bin", "rb") as f:  # seek and read, as a reader of a binary format does
            f.seek(1000)
            assert f.read(10) == (bytes(range(256)) * 40)[1000:1010]
        st = os.stat(mnt / "dir" / "sub" / "c.bin")
        assert st.st_size == 10240 and oct(st.st_mode & 0o777) == "0o444"
        assert os.stat(mnt / "dir").st_mode & 0o40000
        assert abs(st.st_mtime - finished) < 1, "a file's mtime is its commit's time"
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "nope")


def test_a_read_in_a_big_file_fetches_only_the_chunks_it_touches(repo, tmp_path):
    data = os.urandom(24 << 20)
    put(repo, {"/big.bin": data})
    with engine(repo) as s:
        chunks = {r["chunk"].hex() for r in s.file_row("data", "master", "/big.bin")["refs"]}
    assert len(chunks) >= 12
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt), ChunkOpens(repo / "chunks" / "objects", chunks) as opened:
        with open(mnt / "big.bin", "rb") as f:
            f.seek(13 << 20)
            piece = f.read(100_000)
        assert piece == data[13 << 20 : (13 << 20) + 100_000]
        touched = opened.read()
    assert 1 <= len(touched) <= 3, f"a 100 KB read fetched {len(touched)} of the file's {len(chunks)} chunks"


def test_readers_side_by_side_get_the_bytes_of_where_they_read(repo, tmp_path):
    """The mount answers several requests at once; each gets its own bytes."""
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(24 << 20)
    put(repo, {"/big.bin": data})
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt) as proc:
        whole = (mnt / "big.bin").read_bytes()  # front to back, the next chunks mapped ahead

        def piece(at: int) -> bytes:
            with open(mnt / "big.bin", "rb", buffering=0) as f:
                f.seek(at)
                return f.read(1 << 20)

        spots = [(i * 7919 * 1024) % (len(data) - 100) for i in range(24)]
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(piece, spots))
    assert whole == data
    assert all(g == data[at : at + (1 << 20)] for at, g in zip(spots, got))
    assert proc.returncode == 0, proc.said


def test_a_damaged_chunk_reads_as_an_io_error_said_in_one_line(repo, tmp_path):
    data = os.urandom(4 << 20)
    put(repo, {"/big.bin": data})
    with engine(repo) as s:
        chunk = s.file_row("data", "master", "/big.bin")["refs"][1]["chunk"].hex()
    damaged = repo / "chunks" / "objects" / chunk[:2] / chunk[2:]
    damaged.chmod(0o644)
    with open(damaged, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt) as proc:
        with pytest.raises(OSError) as refused:
            (mnt / "big.bin").read_bytes()
        assert (mnt / "a.txt").read_bytes() == b"hello\n"  # the mount serves on
    assert refused.value.errno == errno.EIO
    assert proc.returncode == 0, proc.said
    assert "is damaged" in proc.said and "dpl fsck" in proc.said and "Traceback" not in proc.said, proc.said


def test_a_pinned_mount_does_not_change_when_the_branch_moves(repo, tmp_path):
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt):
        put(repo, {"/a.txt": b"changed\n", "/later.txt": b"later\n"})
        assert (mnt / "a.txt").read_bytes() == b"hello\n"
        assert sorted(os.listdir(mnt)) == ["a.txt", "dir"]
    assert read(repo, "/a.txt") == b"changed\n"


def test_a_write_mount_lands_adds_deletes_and_renames_as_one_commit_on_unmount(repo, tmp_path):
    mnt = tmp_path / "mnt"
    before = commits(repo)
    with mounted(repo, "data@master", mnt, "--write") as proc:
        (mnt / "new.txt").write_bytes(b"new\n")
        (mnt / "out").mkdir()
        (mnt / "out" / "x.txt").write_bytes(b"x\n")
        os.remove(mnt / "a.txt")
        os.rename(mnt / "dir" / "sub", mnt / "moved")
        with open(mnt / "dir" / "b.csv", "ab") as f:
            f.write(b"3,4\n")
        assert sorted(os.listdir(mnt)) == ["dir", "moved", "new.txt", "out"]
        sizes = {line.split()[-1]: line.split()[4] for line in subprocess.run(
            ["ls", "-la", mnt], capture_output=True, check=True).stdout.decode().splitlines()[1:]}
        assert sizes["new.txt"] == "4" and {".", ".."} <= set(sizes), sizes
        assert commits(repo) == before, "nothing lands before the unmount"
    assert proc.returncode == 0, proc.said
    assert "committed data@" in proc.said
    assert commits(repo) == before + 1
    with engine(repo) as s:
        files = s.list_files("data", "master", "/", recursive=True)["path"].to_pylist()
    assert files == ["/dir/b.csv", "/moved/c.bin", "/new.txt", "/out/x.txt"]
    assert read(repo, "/new.txt") == b"new\n" and read(repo, "/out/x.txt") == b"x\n"
    assert read(repo, "/moved/c.bin") == bytes(range(256)) * 40
    assert read(repo, "/dir/b.csv") == b"x,y\n1,2\n3,4\n"


def test_mount_commit_lands_the_changes_while_mounted_and_unmount_lands_the_rest(repo, tmp_path):
    mnt = tmp_path / "mnt"
    before = commits(repo)
    with mounted(repo, "data@master", mnt, "--write", "-m", "from the mount"):
        (mnt / "one.txt").write_bytes(b"1")
        said = dpl("mount", "--commit", mnt, store=repo).stderr.decode()
        assert "committed" in said and commits(repo) == before + 1
        assert read(repo, "/one.txt") == b"1"
        assert "nothing to commit" in dpl("mount", "--commit", mnt, store=repo).stderr.decode()
        (mnt / "two.txt").write_bytes(b"2")
        dpl("unmount", mnt, store=repo)
        assert not os.path.ismount(mnt)
    assert commits(repo) == before + 2
    assert read(repo, "/two.txt") == b"2"
    with engine(repo) as s:
        assert s.resolve_commit("data", "master").description == "from the mount"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_unmount_cleanly(repo, tmp_path, stop):
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt, stop=stop) as proc:
        assert os.listdir(mnt)
    assert proc.returncode == 0, proc.said
    assert not os.path.ismount(mnt) and os.listdir(mnt) == []
    assert "Traceback" not in proc.said


def test_dpl_unmount_clears_the_mount_of_a_killed_process(repo, tmp_path):
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt) as proc:
        proc.kill()
        proc.wait()
        assert os.path.ismount(mnt)
        dpl("unmount", mnt, store=repo)
        assert not os.path.ismount(mnt) and os.listdir(mnt) == []


def test_a_read_only_mount_refuses_writes_with_erofs(repo, tmp_path):
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt):
        for attempt in (lambda: open(mnt / "x.txt", "wb"), lambda: open(mnt / "a.txt", "ab"),
                        lambda: os.remove(mnt / "a.txt"), lambda: os.mkdir(mnt / "d"),
                        lambda: os.rename(mnt / "a.txt", mnt / "b.txt")):
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno == errno.EROFS
        assert (mnt / "a.txt").read_bytes() == b"hello\n"


def test_mount_errors_are_one_sentence(repo, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "file").write_text("a file")
    (tmp_path / "empty").mkdir()
    cases = [
        (("nope@master", tmp_path / "empty"), "nope"),
        (("data@nobranch", tmp_path / "empty"), "nobranch"),
        (("data@master", tmp_path / "full"), "not empty"),
        (("data@master", tmp_path / "file"), "not a directory"),
        (("data@master", tmp_path / "missing"), "does not exist"),
        (("data@master~1", tmp_path / "empty", "--write"), "names a commit"),
        (("--commit", tmp_path / "empty"), "No running dpl mount"),
    ]
    for args, words in cases:
        proc = dpl("mount", *args, store=repo, check=False, timeout=30)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (args, err)
        assert err.startswith("error: ") and words in err.splitlines()[0], (args, err)
        assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert (tmp_path / "full" / "keep").read_text() == "mine" and not os.path.ismount(tmp_path / "empty")


def test_ls_l_of_a_big_directory_is_answered_from_one_listing(repo, tmp_path):
    put(repo, {f"/many/f{i:05}.txt": b"%d" % i for i in range(3000)})
    mnt = tmp_path / "mnt"
    with mounted(repo, "data@master", mnt):
        started = time.monotonic()
        listing = subprocess.run(["ls", "-l", mnt / "many"], capture_output=True, check=True).stdout.decode().splitlines()
        took = time.monotonic() - started
    assert len(listing) == 3001  # "total" and one line per file
    assert [line.split()[4] for line in listing[1:4]] == ["1", "1", "1"] and listing[-1].split()[4] == "4"  # f02999.txt
    assert listing[1].startswith("-r--r--r--") and listing[1].endswith("f00000.txt")
    assert took < 5, f"ls -l of 3,000 files took {took:.1f} s"


# ------------------------------------------------------------------ helpers


class ChunkOpens:
    """Which of `chunks` (hex ids) a process opens from a local chunk store, seen by inotify."""

    IN_OPEN, IN_NONBLOCK = 0x20, 0o4000

    def __init__(self, objects, chunks: set[str]):
        self.chunks = chunks
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.dirs = {}
        for fan in {c[:2] for c in chunks}:
            wd = self.libc.inotify_add_watch(self.fd, str(objects / fan).encode(), self.IN_OPEN)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self.dirs[wd] = fan

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def read(self) -> set[str]:
        time.sleep(0.1)  # events of the last read reach the queue
        seen = set()
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return seen & self.chunks
            at = 0
            while at < len(data):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", data, at)
                name = data[at + 16 : at + 16 + size].rstrip(b"\0").decode()
                seen.add(self.dirs[wd] + name)
                at += 16 + size


def test_a_daemon_mount_returns_once_mounted_and_dpl_unmount_lands_its_changes(repo, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    dpl("mount", "data@master", mnt, "--write", "--daemon", store=repo, timeout=60)
    try:
        assert os.path.ismount(mnt)
        (mnt / "bg.txt").write_bytes(b"background\n")
        assert "committed" in dpl("unmount", mnt, store=repo).stderr.decode()
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    assert not os.path.ismount(mnt)
    assert read(repo, "/bg.txt") == b"background\n"


def test_a_commit_waits_for_files_still_open_for_writing(repo, tmp_path):
    mnt = tmp_path / "mnt"
    before = commits(repo)
    with mounted(repo, "data@master", mnt, "--write") as proc:
        with open(mnt / "half.txt", "wb") as f:
            f.write(b"half")
            f.flush()
            refused = dpl("mount", "--commit", mnt, store=repo, check=False)
            assert refused.returncode == 1 and "still open for writing" in refused.stderr.decode()
            assert commits(repo) == before
        assert "committed" in dpl("mount", "--commit", mnt, store=repo).stderr.decode()
    assert proc.returncode == 0, proc.said
    assert read(repo, "/half.txt") == b"half" and commits(repo) == before + 1


def test_a_mount_through_a_server_reads_and_lands_its_changes_over_http(tmp_path, fuse):
    from test_serve import Server

    store = tmp_path / "served"
    dpl("init", store, "--no-fsync")
    server = Server(store, tmp_path)
    try:
        server.dpl("create-repo", "data")
        put(store, {"/a.txt": b"hello\n", "/big.bin": bytes(range(256)) * 8192})
        mnt, away = tmp_path / "mnt", {"DPL_ADDRESS": server.url, "DPL_STORE": str(tmp_path / "nowhere")}
        with mounted(store, "data@master", mnt, "--write", env=away) as proc:
            assert (mnt / "a.txt").read_bytes() == b"hello\n"
            with open(mnt / "big.bin", "rb") as f:
                f.seek(1 << 20)
                assert f.read(300) == (bytes(range(256)) * 8192)[1 << 20 : (1 << 20) + 300]
            (mnt / "b.txt").write_bytes(b"over http\n")
            os.remove(mnt / "a.txt")
        assert proc.returncode == 0, proc.said
        with engine(store) as s:
            assert s.list_files("data", "master", "/", recursive=True)["path"].to_pylist() == ["/b.txt", "/big.bin"]
        assert read(store, "/b.txt") == b"over http\n"
    finally:
        assert server.stop() == 0
