"""A throw-away PostgreSQL server on loopback, for tests and benchmarks.

Debian's `postgresql` package puts `initdb` and `pg_ctl` under
/usr/lib/postgresql/VERSION/bin (not on PATH); either place will do.  The
cluster lives in a fresh temporary directory, listens on a free loopback
port only (no unix socket), and needs the random password of its superuser,
so parallel sessions never meet.  PostgreSQL refuses to run as root: as root
the server runs as the `postgres` system user (created if missing), which is
why its directory is a private one under /tmp and not pytest's 0700 tmp dir.
Durability is off (fsync, synchronous_commit): a test server need not survive
a power cut, and it makes CREATE DATABASE per test cheap.  So `halt()` is a
fast shutdown, which writes out what was committed; an immediate one would
lose the last commits that synchronous_commit=off had not flushed yet.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .common import Unavailable, free_ports


def find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise Unavailable(f"no `{name}` (run `make services`, which installs Debian's postgresql)")


class PostgresServer:
    def __init__(self, *, user: str = "dpl"):
        self.initdb = find_bin("initdb")
        self.pg_ctl = find_bin("pg_ctl")
        self.user = user
        self.password = secrets.token_hex(16)
        self.port = free_ports(1)[0]
        self.as_root = os.geteuid() == 0
        self.workdir = Path(tempfile.mkdtemp(prefix="dpl-postgres-"))
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.started = False

    def _run_as_owner(self, *command: str, **kw) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, cwd=self.workdir, **kw)

    def _own(self) -> None:
        """As root, hand the directory to the `postgres` system user."""
        if not self.as_root:
            return
        if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
            made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"], capture_output=True, text=True)
            if made.returncode != 0:
                raise Unavailable(f"running as root and no `postgres` user to run the server as ({made.stderr.strip()})")
        shutil.chown(self.workdir, "postgres", "postgres")
        os.chmod(self.workdir, 0o700)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        """Create the cluster (the first time) and start the server."""
        if not (self.data / "PG_VERSION").exists():
            self._initdb(timeout)
        self._start(timeout)

    def _initdb(self, timeout: float) -> None:
        self._own()
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        made = self._run_as_owner(
            self.initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync", timeout=timeout,
        )
        pwfile.unlink()
        if made.returncode != 0:
            raise Unavailable(f"initdb failed: {made.stderr.strip() or made.stdout.strip()}")

    def _start(self, timeout: float) -> None:
        options = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", "-c unix_socket_directories=''",
            "-c max_connections=400", "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c shared_buffers=64MB",
        ])  # fmt: skip
        started = self._run_as_owner(self.pg_ctl, "start", "-w", "-t", str(int(timeout)), "-D", str(self.data), "-l", str(self.log_path), "-o", options)
        if started.returncode != 0:
            raise Unavailable(f"pg_ctl start failed: {started.stderr.strip() or started.stdout.strip()}\n{self.log_tail()}")
        self.started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin("SELECT 1")
                return
            except Exception as e:  # noqa: BLE001 - anything short of an answer means "not yet"
                if time.monotonic() > deadline:
                    self.stop()
                    raise Unavailable(f"the server did not answer within {timeout:.0f} s ({e}):\n{self.log_tail()}") from None
                time.sleep(0.2)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def halt(self) -> None:
        """Stop the server, keeping its data: `start()` brings it back.  Clients
        see their connections cut, as when a server restarts."""
        if self.started:
            self._run_as_owner(self.pg_ctl, "stop", "-m", "fast", "-w", "-D", str(self.data))
            self.started = False

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
