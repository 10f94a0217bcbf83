"""A real `dpl serve` process for tests, and the warm spare that lets the
repo, pipeline and provenance suites run through one server per test.

`Server(store, tmp_path)` starts `dpl serve --listen 127.0.0.1:0` and returns
once it answers /healthz.  A start costs about 2 s on this machine (importing
FastAPI and building the app is most of it), more than many of the suites'
tests take, so `ServerPool` starts the next test's server on its own fresh,
empty store while the current test runs: each served test still gets a
process of its own over a store nobody used, it just does not wait for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from dplcli import DPL, dpl


class Server:
    """`dpl serve --listen 127.0.0.1:0` on `store`; the bound address is read from its first log line.

    `wait=False` returns as soon as the process is started; `ready()` then
    waits for it to answer."""

    def __init__(self, store, tmp_path, *args: str, wait: bool = True):
        self.store, self.log_path = Path(store), Path(tmp_path) / f"serve-{time.monotonic_ns()}.log"
        self.env = _env(tmp_path)
        self.http: httpx.Client | None = None
        self.proc = subprocess.Popen([DPL, "serve", "--listen", "127.0.0.1:0", "--store", str(store), "--poll", "0.5", *args],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"))
        if wait:
            self.ready()

    def ready(self) -> "Server":
        if self.http is not None:
            return self
        self.url = self._wait_listening()
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("dpl serve did not answer /healthz:\n" + self.log_path.read_text())

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 30  # a loaded machine may take its time to import the server
        while time.monotonic() < deadline:
            for event in self.events():
                if event["event"] == "server.listening":
                    return event["address"]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("dpl serve did not start:\n" + self.log_path.read_text())

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def dpl(self, *args, **kw):
        """The real CLI, acting on this server."""
        return dpl("--address", self.url, *args, env=self.env, **kw)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.http is not None:
            self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _env(tmp_path) -> dict:
    """No user config and no DPL_ADDRESS from outside the test: each test says where it acts."""
    env = {k: v for k, v in os.environ.items() if k != "DPL_ADDRESS"}
    env["XDG_CONFIG_HOME"] = str(Path(tmp_path) / "config")
    return env


class ServerPool:
    """One server per test, the next one started while this one's test runs.

    `take(init_args)` answers a ready Server over a fresh store made with
    `dpl init <root> *init_args`, and starts the spare for the next served
    test if `expected` (set from the collected tests) says one will come.
    A spare is made with the init arguments of the take before it; one
    made for other arguments is stopped and not used."""

    def __init__(self, base: Path):
        self.base = base
        self.expected = 0  # served tests still to come in this session
        self._spare: tuple[tuple, Server] | None = None
        self._n = 0

    def _start(self, init_args: tuple) -> Server:
        self._n += 1
        home = self.base / f"s{self._n:03d}"
        home.mkdir()
        name = f"{self.base.name}-{home.name}"  # an object-store prefix of its own, where the arguments ask for one
        dpl("init", home / "store", *(a.replace("{name}", name) for a in init_args), env=_env(home))
        return Server(home / "store", home, wait=False)

    def take(self, init_args: tuple = ("--no-fsync",)) -> Server:
        init_args = tuple(map(str, init_args))
        spare, self._spare = self._spare, None
        if spare is not None and spare[0] != init_args:
            spare[1].stop()
            spare = None
        server = spare[1] if spare is not None else self._start(init_args)
        self.expected = max(0, self.expected - 1)
        if self.expected:
            self._spare = (init_args, self._start(init_args))
        return server.ready()

    def close(self) -> None:
        if self._spare is not None:
            self._spare[1].stop()
            self._spare = None
