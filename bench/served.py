"""`dpl serve` on a store for a benchmark: started on a free loopback port, its address read from its log."""

from __future__ import annotations

import json
import subprocess
import time

import harness as h


class Served:
    def __init__(self, store: str, log: str, *args: str, timeout: float = 60):
        import urllib.error
        import urllib.request

        self.log = log
        self.proc = subprocess.Popen(h.dpl_cmd("serve", "--listen", "127.0.0.1:0", "--store", store, *args),
                                     stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        self.url = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.url is None:
                self.url = self._address()
            if self.url:
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=5) as answer:
                        if answer.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise h.CommandFailed("dpl serve did not start:\n" + open(log, errors="replace").read()[-2000:])

    def _address(self) -> str | None:
        for line in open(self.log, "rb").read().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "server.listening":
                return event["address"]
        return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
