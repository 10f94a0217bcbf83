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
made whole by a rename.  What keeps every commit landed exactly once:
- a request is marked landed (its file removed) only after the transaction
  that landed it has committed, so "gone" means "landed";
- a holder killed between its commit and the removal leaves files of
  commits that exist: the next holder looks their ids up and drops them
  instead of landing them again;
- files of processes that died are dropped, not landed: nothing protects
  their objects from gc any more (engine/writers.py);
- a request the holder cannot land (a path collision) is left in place for
  its owner, who lands it itself and meets the error.
Writers on other machines (S3 + PostgreSQL) have queues of their own; the
metadata transaction stays the judge between machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field

from ..storage import pids
from ..storage.perprocess import PerProcess
from ..storage.layer import Layer
from ..storage.metadata.commits import Commit


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
        with open(path + ".tmp", "w") as f:  # no fsync: a request lost in a power cut is one whose writer is gone too
            f.write(body)
        os.rename(path + ".tmp", path)
        request.path = path

    def queued(self, request: Request) -> bool:
        """Whether `request` still waits (else a holder landed it)."""
        if request.path is not None:
            return os.path.exists(request.path)
        return not request.landed

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
            if name.endswith(".tmp") or not stamp.isdigit():
                continue  # still being written: its writer waits for the turn, and lands it itself if need be
            try:
                with open(path) as f:
                    d = json.load(f)
            except (FileNotFoundError, ValueError):
                continue  # removed meanwhile (its owner gave up)
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
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(r.path)
        gone = {id(r) for r in requests}
        with self.lock:
            self.local = [r for r in self.local if id(r) not in gone]


_queues = PerProcess(Queue)  # a forked child's parent's threads and their requests are not its own


def queue(directory: str) -> Queue:
    """The queue whose files live in `directory` (one object per directory in a process)."""
    return _queues.get(directory)
