"""The landing queue of a branch: commits waiting for the writer whose turn it is.

Writers on one branch take turns (storage/turns.py).  Taken one by one,
every turn paid for a transaction, a flush and a compaction of its own, and
8 writers at once committed no faster than one.  So a writer that finds the
turn taken queues its request here: the commit id it will have and the
delta layers it has already written and flushed.  Whoever holds the turn
lands every queued request in one transaction, as a chain of commits
(engine/commits.py `_land_group`); a writer whose turn comes finds its
request landed, or lands the queue itself.

A request waiting for a thread of its own process waits in memory; one
waiting for another process is a small file, `<time ns>-<pid>-<commit id>`,
written in one write (a holder that finds it half-written, no JSON yet,
looks again later).  What keeps every commit landed exactly once:
- a request is marked landed (its file removed) only after the transaction
  that landed it has committed, so "gone" means "landed";
- a holder killed between its commit and the removal leaves files of
  commits that exist: the next holder looks their ids up and drops them
  instead of landing them again;
- files of processes that died are dropped, not landed: nothing protects
  their objects from gc any more (engine/writers.py);
- a request the holder cannot land (a path collision) is left in place for
  its owner, who lands it itself and meets the error.
A waiter in another process learns that its request landed from a FIFO
of its own, `<request file>.wake`: the holder writes the landed commit
there before it removes the request (so the waiter need not read it back
from the metadata), and a byte to every waiter left when it gives up the
turn.  Waiting for the turn itself instead kept every writer blocked
until the holder had drained the whole queue, and then handed the turn
from waiter to waiter just to learn "landed": writers moved in step, and
between two holders nobody landed anything.  A wake-up is only a hint (the
waiter looks again: its file gone means landed, a free turn means land it
itself), and a lost one costs at most WAIT seconds.
Writers on other machines (S3 + PostgreSQL) have queues of their own; the
metadata transaction stays the judge between machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from dataclasses import dataclass, field

from ..storage import pids
from ..storage.perprocess import PerProcess
from ..storage.layer import Layer
from ..storage.metadata.commits import Commit

WAKE = ".wake"  # the suffix of a waiter's FIFO
WAIT = 0.1  # seconds a waiter sleeps at most between looks (a holder killed wakes nobody)


@dataclass
class Request:
    commit_id: str
    delta: list[Layer]
    description: str | None
    origin: str
    job: str | None
    path: str | None = None  # its file, when it waits for a turn another process holds
    stamp: int = field(default_factory=time.time_ns)  # when it was queued: the order of the chain
    landed: bool = False  # set by the holder, for a request queued in memory
    commit: Commit | None = None  # the commit it landed as (set by a holder of this process)
    wake: int | None = None  # the read end of its FIFO, when it waits in a file


class Queue:
    """The queue of one branch: requests of this process's threads wait in
    memory (the holder is a thread of this process, or will be), those
    waiting for another process's turn in files."""

    def __init__(self, directory: str):
        self.directory = directory
        self.made = False
        self.lock = threading.Lock()
        self.local: list[Request] = []

    def put_local(self, request: Request) -> None:
        with self.lock:
            self.local.append(request)

    def put_file(self, request: Request) -> None:
        if not self.made:
            os.makedirs(self.directory, exist_ok=True)
            self.made = True
        name = f"{request.stamp:020d}-{os.getpid()}-{request.commit_id}"
        body = json.dumps({"id": request.commit_id, "delta": [l.to_json() for l in request.delta],
                           "description": request.description, "origin": request.origin, "job": request.job})
        path = os.path.join(self.directory, name)
        os.mkfifo(path + WAKE, 0o600)  # before the request is seen: whoever lands it can wake us
        # Read and write: a FIFO whose last writer went away polls readable
        # for ever after; holding a write end of our own, it never does.
        request.wake, request.path = os.open(path + WAKE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC), path
        try:
            # One write, no rename: a holder that reads it half-written finds no JSON
            # and leaves it for later.  No fsync: a request lost in a power cut is
            # one whose writer is gone too.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, body.encode())
            finally:
                os.close(fd)
        except BaseException:  # (a full disk): not queued after all, and no FIFO left behind
            self.forget(request)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            request.path = None
            raise

    def wait(self, request: Request) -> None:
        """Sleep until a holder wakes `request`'s owner (or WAIT seconds pass)."""
        if request.wake is None:
            return
        poll = select.poll()  # not select(): a busy process's descriptors may be past FD_SETSIZE
        poll.register(request.wake, select.POLLIN)
        if poll.poll(WAIT * 1000):
            self._read_wake(request)

    def _read_wake(self, request: Request) -> None:
        """Take what holders wrote to `request`'s FIFO: wake-ups, and its commit once it landed."""
        try:
            got = os.read(request.wake, 65536)
        except BlockingIOError:
            return
        for line in got.split(b"\n"):
            line = line.strip(b"\0")
            try:
                commit = Commit.from_row(json.loads(line)) if line else None
            except (ValueError, KeyError, TypeError):
                continue  # not a commit this dpl reads (another version's holder): read back instead
            if commit is not None and commit.id == request.commit_id:
                request.commit = commit

    def forget(self, request: Request) -> None:
        """`request` is ours and waits no more: its FIFO goes."""
        if request.wake is not None:
            os.close(request.wake)
            request.wake = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request.path + WAKE)

    def wake_all(self) -> None:
        """Wake every waiter: the turn is free, whoever still waits may take it."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(WAKE):
                _wake(os.path.join(self.directory, name))

    def queued(self, request: Request) -> bool:
        """Whether `request` still waits (else a holder landed it)."""
        if request.path is None:
            return not request.landed
        if request.commit is None and request.wake is not None and not os.path.exists(request.path):
            self._read_wake(request)  # its commit, written before the file went
            return False
        return request.commit is None and os.path.exists(request.path)

    def pending(self) -> list[Request]:
        """The requests waiting now, oldest first; files of dead processes are removed."""
        with self.lock:
            found = list(self.local)
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            names = []
        for name in names:
            stamp, _, rest = name.partition("-")
            pid, _, rest = rest.partition("-")
            path = os.path.join(self.directory, name)
            if not pids.alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            if name.endswith(WAKE) or not stamp.isdigit():
                continue
            try:
                with open(path, "rb") as f:
                    d = json.loads(f.read())
            except (FileNotFoundError, ValueError):
                continue  # removed meanwhile (its owner gave up), or still being written (we look again)
            found.append(Request(d["id"], [Layer.from_json(x) for x in d["delta"]], d["description"], d["origin"],
                                 d["job"], path, int(stamp)))
        found.sort(key=lambda r: r.stamp)
        return found

    def done(self, requests) -> None:
        """`requests` have landed (or are dropped): they wait no more."""
        requests = list(requests)
        for r in requests:
            r.landed = True
            if r.path is not None:
                if r.wake is None:  # another's: tell it, before the file goes (then it finds the commit, if any)
                    _wake(r.path + WAKE, _message(r.commit))
                else:
                    self.forget(r)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(r.path)
        gone = {id(r) for r in requests}
        with self.lock:
            self.local = [r for r in self.local if id(r) not in gone]


def _message(commit: Commit | None) -> bytes:
    if commit is None:
        return b"\0"
    line = json.dumps(commit.to_row()).encode() + b"\n"
    return line if len(line) <= select.PIPE_BUF else b"\0"  # whole or not at all: a longer one is read back


def _wake(fifo: str, message: bytes = b"\0") -> None:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # gone, or nobody reads it any more: nobody to wake
        return
    try:
        os.write(fd, message)
    except (BlockingIOError, BrokenPipeError):
        pass  # full of wake-ups already, or its reader just went
    finally:
        os.close(fd)


_queues = PerProcess(Queue)  # a forked child's parent's threads and their requests are not its own


def queue(directory: str) -> Queue:
    """The queue whose files live in `directory` (one object per directory in a process)."""
    return _queues.get(directory)
