"""`dpl watch`: a real watcher process mirrors a folder; each settled batch is one commit and its jobs run."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import threading
import time

from dpl.engine import Store
from dplcli import popen

COPY = ["sh", "-c", "for f in /pfs/data/*; do cp -r $f /pfs/out/; done"]


class Watch:
    """A `dpl watch` subprocess and the lines it says, read as they come."""

    def __init__(self, store, folder, settle=0.4):
        self.proc = popen("watch", folder, "data@master", "--settle", settle, store=store)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("watching")

    def _read(self):
        for raw in self.proc.stderr:
            self.lines.put(raw.decode().rstrip("\n"))

    def wait_for(self, needle, timeout=30) -> list[str]:
        """Every line up to the first holding `needle`."""
        seen, deadline = [], time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if needle in line:
                return seen
        raise AssertionError(f"no {needle!r} within {timeout}s; saw {seen}")

    def quiet(self, seconds=2.0) -> list[str]:
        seen, deadline = [], time.time() + seconds
        while time.time() < deadline:
            try:
                seen.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                pass
        return seen

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        return code


def setup(tmp_path):
    store = tmp_path / "store"
    s = Store.init(store)
    s.create_repo("data")
    s.create_pipeline(json.dumps({"pipeline": {"name": "copy"}, "transform": {"cmd": COPY},
                                  "input": {"pfs": {"repo": "data", "glob": "/*"}}}))
    s.run_jobs()
    s.close()
    folder = tmp_path / "folder"
    folder.mkdir()
    return store, folder


def state(store):
    s = Store.open(store)
    try:
        files = {r["path"]: s.read_file("data", "master", r["path"]) for r in s.file_table("data", "master")[1].to_pylist()}
        out = {r["path"] for r in s.file_table("copy", "master")[1].to_pylist()}
        return len(s.list_commits("data")), files, out, s.list_jobs("copy")[0]
    finally:
        s.close()


def test_edits_renames_deletes_and_temp_files(tmp_path):
    store, folder = setup(tmp_path)
    (folder / "old.txt").write_text("there before\n")  # reconciled at start
    w = Watch(store, folder)
    assert state(store)[:3] == (1, {"/old.txt": b"there before\n"}, {"/old.txt"})

    (folder / "a.txt").write_text("one\n")
    (folder / "b.txt").write_text("two\n")
    w.wait_for("committed data@")
    n, files, out, job = state(store)
    assert (n, files, out) == (2, {"/old.txt": b"there before\n", "/a.txt": b"one\n", "/b.txt": b"two\n"}, {"/old.txt", "/a.txt", "/b.txt"})
    assert (job["processed"], job["skipped"]) == (2, 1)

    for junk in (".a.txt.swp", "a.txt~", "4913", ".#a.txt"):  # an editor saving a.txt
        (folder / junk).write_text("x")
    (folder / "a.txt").write_text("ONE\n")
    for junk in (".a.txt.swp", "a.txt~", "4913", ".#a.txt"):
        (folder / junk).unlink()
    (folder / ".dpl").mkdir()
    (folder / ".dpl" / "config.json").write_text("{}")
    w.wait_for("committed data@")
    n, files, out, job = state(store)
    assert n == 3 and files["/a.txt"] == b"ONE\n" and set(files) == {"/old.txt", "/a.txt", "/b.txt"}
    assert (job["processed"], job["skipped"]) == (1, 2)

    os.rename(folder / "b.txt", folder / "c.txt")
    (folder / "old.txt").unlink()
    w.wait_for("committed data@")
    n, files, out, job = state(store)
    assert (n, set(files), out) == (4, {"/a.txt", "/c.txt"}, {"/a.txt", "/c.txt"})
    assert (job["processed"], job["skipped"]) == (1, 1)  # c.txt is new to the pipeline; b's and old's outputs are gone
    assert not [line for line in w.quiet(1.5) if "committed" in line]  # nothing more to commit
    assert w.stop() == 0

    # changed while stopped: the next start lands it as one commit
    (folder / "a.txt").unlink()
    (folder / "d.txt").write_text("four\n")
    w = Watch(store, folder)
    n, files, _, _ = state(store)
    assert (n, set(files)) == (5, {"/c.txt", "/d.txt"})
    assert w.stop() == 0


def test_a_thousand_file_copy_lands_as_a_few_commits(tmp_path):
    store, folder = setup(tmp_path)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(1000):
        (src / ("sub" if i % 2 else "") / f"f{i:04d}.txt").write_text(f"{i}\n")
    w = Watch(store, folder)
    shutil.copytree(src, folder / "copy")
    lines = w.wait_for("committed data@")
    deadline = time.time() + 20
    while time.time() < deadline:
        n, files, _, _ = state(store)
        if len(files) == 1000:
            break
        time.sleep(0.5)
    lines += w.quiet(1.0)
    n, files, _, _ = state(store)
    assert len(files) == 1000 and files["/copy/sub/f0001.txt"] == b"1\n"
    assert 1 <= n <= 3, lines
    assert w.stop() == 0


def test_a_file_still_being_written_is_waited_for(tmp_path):
    store, folder = setup(tmp_path)
    w = Watch(store, folder, settle=1.5)
    with open(folder / "big.csv", "w") as f:
        for i in range(12):  # a slow writer: a row every 0.1 s
            f.write(f"{i},{i * i}\n")
            f.flush()
            time.sleep(0.1)
    w.wait_for("committed data@")
    assert not [line for line in w.quiet(2.0) if "committed" in line]
    n, files, out, job = state(store)
    assert n == 1 and files["/big.csv"].count(b"\n") == 12 and out == {"/big.csv"} and job["state"] == "success"
    assert w.stop() == 0
