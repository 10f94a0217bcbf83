"""Group commit (engine/landqueue.py): the writer whose turn it is lands the
commits queued behind it, each exactly once, and leaves alone what it must not land."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
from dpl.engine import Store, landqueue, uploads
from dpl.storage import index
from dpl.storage.errors import PathCollision


@pytest.fixture
def s(tmp_path):
    s = Store.init(tmp_path / "store", durable=False)
    s.create_repo("r")
    s.put_bytes("r", "master", {"/p": b"p"}, description="first")
    return s


def queue_of(s) -> landqueue.Queue:
    return landqueue.queue(s.commits._branch_turn("r", "master").path + ".queue")


def queued(s, path: str, data: bytes, commit_id: str, *, pid: int | None = None) -> str:
    """A request another process left in the branch's queue: its layer written, its file made."""
    layer = index.write_small(s.chunks, uploads._rows(s.chunks, [(path, data)]))
    request = landqueue.Request(commit_id, [layer], f"queued {path}", "user", None)
    q = queue_of(s)
    q.put_file(request)
    if pid is None:
        return request.path
    elsewhere = request.path.replace(f"-{os.getpid()}-", f"-{pid}-")
    os.rename(request.path, elsewhere)
    return elsewhere


def test_the_holder_lands_a_waiting_request_before_its_own_in_one_chain(s):
    waiting = queued(s, "/q", b"q", "a" * 32)
    mine = s.put_bytes("r", "master", {"/m": b"m"}, description="mine")
    history = s.list_commits("r", "master")
    assert [c.description for c in history] == ["mine", "queued /q", "first"]
    assert mine.parent == "a" * 32 and mine.nfiles == 3
    assert s.read_file("r", "master", "/q") == b"q"
    assert not os.path.exists(waiting)  # landed: its owner finds it gone


def test_a_request_already_landed_by_a_killed_holder_is_not_landed_again(s):
    layer = index.write_small(s.chunks, uploads._rows(s.chunks, [("/q", b"q")]))
    landed = s.commits.land("r", "master", [layer], description="landed", commit_id="b" * 32)
    # The holder was killed after its commit, before it removed the request's file.
    q = queue_of(s)
    stale = landqueue.Request(landed.id, [layer], "landed", "user", None)
    q.put_file(stale)
    s.put_bytes("r", "master", {"/m": b"m"}, description="mine")
    assert [c.description for c in s.list_commits("r", "master")] == ["mine", "landed", "first"]
    assert not os.path.exists(stale.path)


def test_a_request_of_a_dead_process_is_dropped_not_landed(s):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = queued(s, "/q", b"q", "c" * 32, pid=dead.pid)
    s.put_bytes("r", "master", {"/m": b"m"}, description="mine")
    assert [c.description for c in s.list_commits("r", "master")] == ["mine", "first"]
    assert not os.path.exists(orphan)


def test_a_request_that_collides_is_left_to_its_owner_and_the_others_land(s):
    clashing = queued(s, "/p/x", b"x", "d" * 32)  # /p is a file: /p/x cannot land
    fine = queued(s, "/q", b"q", "e" * 32)
    s.put_bytes("r", "master", {"/m": b"m"}, description="mine")
    assert [c.description for c in s.list_commits("r", "master")] == ["mine", "queued /q", "first"]
    assert os.path.exists(clashing) and not os.path.exists(fine)
    os.unlink(clashing)


def test_my_own_collision_is_mine_alone(s):
    fine = queued(s, "/q", b"q", "f" * 32)
    with pytest.raises(PathCollision):
        s.put_bytes("r", "master", {"/p/x": b"x"})
    assert [c.description for c in s.list_commits("r", "master")] == ["queued /q", "first"]
    assert not os.path.exists(fine)
    assert queue_of(s).pending() == []


def test_a_chain_is_compacted_once_at_its_end_not_at_every_commit(s):
    for i in range(5):
        queued(s, f"/q{i}", b"q", f"{i:032x}")
    s.put_bytes("r", "master", {"/m": b"m"}, description="mine")
    history = s.list_commits("r", "master")[::-1]  # first, the five queued, mine
    for parent, child in itertools.pairwise(history[:-1]):
        assert child.layers == parent.layers + child.delta  # stacked: no merged layer written for it
    last = history[-1]
    assert len(last.layers) < len(history[-2].layers) + 1  # the chain's end is compacted: the next chain lands on it
    assert last.nfiles == 7 and [s.read_file("r", last.id, f"/q{i}") for i in range(5)] == [b"q"] * 5


def test_a_waiter_is_handed_its_commit_as_the_metadata_holds_it(s):
    layer = index.write_small(s.chunks, uploads._rows(s.chunks, [("/q", b"q")]))
    mine = landqueue.Request("a" * 32, [layer], "waits", "user", None)
    q = queue_of(s)
    q.put_file(mine)  # as a writer of another process queues it
    assert q.queued(mine)
    fd = os.open(mine.path + landqueue.WAKE, os.O_WRONLY)
    os.write(fd, b'{"not": "a commit"}\n')  # from another version's holder: ignored
    os.close(fd)
    s.put_bytes("r", "master", {"/m": b"m"}, description="holder")  # the holder lands it first
    q.wait(mine)
    assert not q.queued(mine)
    assert mine.commit == s.repos.get_commit("r", "a" * 32)  # handed over, not read back
    assert mine.commit.description == "waits" and mine.commit.nfiles == 2
    q.forget(mine)
    assert os.listdir(q.directory) == []  # its FIFO goes with it


def test_a_holder_leaving_the_turn_wakes_whoever_still_waits(s):
    import select

    q = queue_of(s)
    layer = index.write_small(s.chunks, uploads._rows(s.chunks, [("/p/x", b"x")]))
    stuck = landqueue.Request("b" * 32, [layer], "clashes", "user", None)  # /p is a file: the holder cannot land it
    q.put_file(stuck)
    s.put_bytes("r", "master", {"/m": b"m"})
    poll = select.poll()
    poll.register(stuck.wake, select.POLLIN)
    assert poll.poll(0)  # woken without waiting for a timeout: the turn is free
    assert q.queued(stuck) and stuck.commit is None  # and still its own to land
    q.done([stuck])


def test_threads_and_processes_writing_one_branch_land_every_commit_once_in_order(s, tmp_path):
    import threading

    root, n = str(s.root), 25
    script = ("import sys\nfrom dpl.engine import Store\ns = Store.open(sys.argv[1])\n"
              "for i in range(int(sys.argv[3])):\n    s.put_bytes('r', 'master', {f'/p{sys.argv[2]}/{i:03d}': b'x'}, description=f'p{sys.argv[2]}:{i}')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, root, str(w), str(n)], stderr=subprocess.PIPE) for w in range(3)]

    def thread(t: int) -> None:
        own = Store.open(root)
        for i in range(n):
            own.put_bytes("r", "master", {f"/t{t}/{i:03d}": b"x"}, description=f"t{t}:{i}")

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()
    history = s.list_commits("r", "master")
    assert len(history) == 6 * n + 1 and len({c.id for c in history}) == len(history)
    order: dict[str, list[int]] = {}
    for newer, older in itertools.pairwise(history):
        assert newer.parent == older.id and newer.nfiles == older.nfiles + 1
    for c in reversed(history[:-1]):
        writer, i = c.description.split(":")
        order.setdefault(writer, []).append(int(i))
    assert order == {w: list(range(n)) for w in ("p0", "p1", "p2", "t0", "t1", "t2")}
    directory = queue_of(s).directory
    assert queue_of(s).pending() == [] and (not os.path.exists(directory) or os.listdir(directory) == [])


def test_every_commit_of_a_group_starts_its_own_wave_of_downstream_jobs(s):
    import json

    spec = {"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "r", "glob": "/"}}, "transform": {"cmd": ["true"]}}
    s.create_pipeline(json.dumps(spec))
    waiting = [queued(s, f"/q{i}", b"q", f"{i:032x}") for i in range(3)]
    mine = s.put_bytes("r", "master", {"/m": b"m"})  # lands the three queued commits, then its own
    assert not any(os.path.exists(w) for w in waiting)
    for wave in [f"{i:032x}" for i in range(3)] + [mine.id]:
        assert [j["pipeline"] for j in s.list_jobs(wave=wave)] == ["p"]  # the pipeline heard of each commit


def test_a_remembered_read_is_forgotten_at_the_first_write(s):
    from dpl.storage.metadata.memo import MemoTx

    statements = []
    with s.db.write() as tx:
        tx.conn.set_trace_callback(statements.append)
        memo = MemoTx(tx)
        sql = "SELECT name FROM branches WHERE repo=? ORDER BY name"
        assert [r["name"] for r in memo.all(sql, ("r",))] == ["master"]
        assert [r["name"] for r in memo.all(sql, ("r",))] == ["master"]
        assert len(statements) == 1  # the second read was answered from memory
        memo.execute("INSERT INTO branches (repo, name, head, created) VALUES (?, ?, NULL, 0)", ("r", "other"))
        assert [r["name"] for r in memo.all(sql, ("r",))] == ["master", "other"]
        tx.conn.set_trace_callback(None)
