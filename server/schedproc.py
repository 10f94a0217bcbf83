"""The scheduler in a process of its own, beside the API's.

A job's bookkeeping (planning datums, hashing, recording, landing outputs)
is Python work.  In the API's process it held the interpreter lock the
event loop needs, so a small get-file waited behind it: its p99 was twice
its p50 while a job ran.  Pachyderm keeps its workers out of pachd for the
same reason.  Here `dpl serve` starts `python -m dpl.server.schedproc`,
which opens the same store and runs `scheduler.Scheduler` there; the two
talk over the child's stdin and stdout, one line per message:

    API -> scheduler   "wake"           a commit landed through this server
                       "stop SECONDS"   shutdown: finish (or leave) the round
    scheduler -> API   {"commit": repo}, {"job": [pipeline, state]}
                                        what the server's metrics count
                       {"up": bool}, {"rounds": n, "busy": bool}
                       {"stopped": clean}

The child's log lines go to the server's stderr, as before.  It dies with
the server (PR_SET_PDEATHSIG, and the end of its stdin), so a killed server
leaves no scheduler holding a job's lease: the next start resumes the job,
as it did when the scheduler was a thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from .observe import log_event


class SchedulerProcess:
    """What `app.create_app` holds: start, wake and stop the scheduler process,
    and what /healthz says of it (`running`, `healthy`, `busy`, `rounds`)."""

    def __init__(self, store, metrics, *, executor: str | None = None, poll: float = 2.0, enabled: bool = True,
                 workers: int = 1):
        self.store, self.metrics, self.enabled = store, metrics, enabled
        self.options = {"executor": executor, "poll": poll, "workers": max(1, workers)}
        self.workers = self.options["workers"]
        self.rounds = 0
        self.busy = False
        self.clean: bool | None = None  # what the child said when it stopped
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False
        self._up = False
        self._write_lock = threading.Lock()

    @property
    def running(self) -> bool:
        """The process has started its scheduler and takes work."""
        return self._up and self._proc is not None and self._proc.poll() is None and not self._stopping

    @property
    def healthy(self) -> bool:
        """False while the scheduler process starts (~1 s of imports: a server that says it is
        healthy runs the jobs of what lands at once), and when it is gone while it should be
        taking work."""
        return not self.enabled or self._stopping or self.running

    def start(self) -> None:
        if not self.enabled:
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dpl.server.schedproc", str(self.store.root), json.dumps(self.options | {"server": os.getpid()})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, bufsize=0)
        os.set_blocking(self._proc.stdin.fileno(), False)  # a wake never blocks a request (see `wake`)
        self._reader = threading.Thread(target=self._read, name="dpl-scheduler-reader", daemon=True)
        self._reader.start()

    def wake(self) -> None:
        self._send(b"wake\n")

    def stop(self, grace: float) -> bool:
        """Take no new work; wait up to `grace` seconds for the round under way.
        True when nothing was left running."""
        if self._proc is None:
            return True
        self._stopping = True
        self._send(f"stop {grace}\n".encode(), block=True)
        try:
            self._proc.wait(grace + 10)  # the child exits by itself once its grace is over
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        self.metrics.scheduler_up.set(0)
        self.busy = False
        return bool(self.clean)

    def _send(self, line: bytes, block: bool = False) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        fd = self._proc.stdin.fileno()
        with self._write_lock:
            if block:
                os.set_blocking(fd, True)
            try:
                os.write(fd, line)
            except BlockingIOError:
                pass  # the pipe is full of wakes the child has yet to read: one more adds nothing
            except BrokenPipeError:
                pass  # the child is gone; `healthy` says so

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "commit" in message:
                self.metrics.commits.labels(message["commit"]).inc()
            elif "job" in message:
                self.metrics.jobs_run.labels(*message["job"]).inc()
            elif "rounds" in message:
                self.rounds, self.busy = message["rounds"], message["busy"]
            elif "up" in message:
                self._up = message["up"]
                self.metrics.scheduler_up.set(1 if message["up"] else 0)
            elif "stopped" in message:
                self.clean = message["stopped"]
        if not self._stopping:
            log_event("scheduler.error", error=f"the scheduler process exited ({self._proc.wait()}) while the server runs")


# ------------------------------------------------------------ the child


class _Report:
    """The Scheduler's report, sent to the server as JSON lines on stdout."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sent = (0.0, None)  # when progress was last sent, and what business it said

    def send(self, message: dict) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def commit(self, repo: str) -> None:
        self.send({"commit": repo})

    def job(self, pipeline: str, state: str) -> None:
        self.send({"job": [pipeline, state]})

    def up(self, up: bool) -> None:
        self.send({"up": up})

    def progress(self, rounds: int, busy: bool) -> None:
        """Rounds and business: at once when the business changes, else at most 4 times a second
        (16 clients' commits wake hundreds of rounds)."""
        last, was_busy = self._sent
        now = time.monotonic()
        if busy != was_busy or now - last >= 0.25:
            self._sent = (now, busy)
            self.send({"rounds": rounds, "busy": busy})


def _die_with_parent(server: int) -> None:
    """SIGKILL this process when the server dies, however it dies (Linux)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the end of stdin still stops it
    if os.getppid() != server:
        os._exit(0)  # the server died while this process started, before the signal was asked for
    # The server owns SIGINT and SIGTERM and passes the stop on over stdin:
    # a Ctrl-C reaching the whole process group must not cut a job short here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(root: str, options: dict) -> None:
    _die_with_parent(options["server"])
    from .observe import route_logging
    from .scheduler import Scheduler
    from ..engine import Store

    route_logging()
    store = Store.open(root)
    report = _Report()
    scheduler = Scheduler(store, report, executor=options["executor"], poll=options["poll"], workers=options["workers"])
    scheduler.start()
    grace = 0.0
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "wake":
            scheduler.wake()
        elif command == "stop":
            grace = float(arg or 0)
            break
    # Asked to stop, or the server is gone (stdin closed): no new round.
    clean = scheduler.stop(grace)
    report.send({"stopped": clean})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # datum threads still running past the grace must not hold the process open; the job resumes later


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
