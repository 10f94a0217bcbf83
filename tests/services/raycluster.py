"""A throw-away Ray cluster of several nodes on this machine, for tests and benchmarks.

Each node is one `ray start --block` (the venv's `ray`, so workers run the
same Python and the same editable dpl) in its own session: the head with a
free GCS port, the others joining it by address.  Every port a node opens
is a free one picked at start, so two raylets on one host (or two test
sessions) never meet, the dashboard is off and the object store small, so
that a 2-core CI machine can hold it.  `stop()` ends exactly the processes
this cluster started (SIGTERM to each `ray start --block`, which stops its
node, then SIGKILL to whatever of its process group is left) — never
`ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Unavailable, find_command, free_ports

READY_SECONDS = 90.0
WORKER_PORTS = 400  # per node


def find_ray() -> str:
    return find_command("ray", "pip install 'dpl[ray]'")


class RayCluster:
    def __init__(self, workdir: str | os.PathLike, *, nodes: int = 2, cpus_per_node: int = 1, object_store_memory: int = 200_000_000):
        self.ray = find_ray()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Ray's unix sockets live under its temp dir, and a socket path may
        # not pass 107 bytes: pytest's tmp paths can be too deep for that.
        self.temp_dir = tempfile.mkdtemp(prefix="dplray-", dir="/tmp")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_memory = object_store_memory
        self.port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _node_command(self, head: bool, worker_ports: tuple[int, int]) -> list[str]:
        nm, om, agent, agent_grpc, env_agent, metrics = free_ports(6)
        cmd = [
            self.ray, "start", "--block", "--disable-usage-stats", "--log-style=record",
            f"--num-cpus={self.cpus_per_node}", "--num-gpus=0", f"--object-store-memory={self.object_store_memory}",
            "--node-ip-address=127.0.0.1", f"--node-manager-port={nm}", f"--object-manager-port={om}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
            f"--min-worker-port={worker_ports[0]}", f"--max-worker-port={worker_ports[1]}",
        ]  # fmt: skip
        if head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"]
        else:
            cmd += [f"--address={self.address}"]
        return cmd

    def environ(self) -> dict[str, str]:
        """What a driver (a `dpl` process) needs to find this cluster."""
        return {"RAY_ADDRESS": self.address}

    def start(self) -> None:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS="")
        env.pop("RAY_ADDRESS")
        # Every worker and driver of a node takes a port of its range.  Ray's
        # default range is one for the whole host, so each node gets its own
        # slice of 10000-30000 (below the kernel's ephemeral ports, which
        # `_free_ports` hands out), at a random place so that two sessions
        # on one machine are unlikely to meet.
        base = 10000 + random.randrange(0, 20000 - WORKER_PORTS * self.nodes)
        for i in range(self.nodes):
            ports = (base + i * WORKER_PORTS, base + (i + 1) * WORKER_PORTS - 1)
            log = open(self.workdir / f"node{i}.log", "wb")
            try:
                proc = subprocess.Popen(self._node_command(i == 0, ports), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as e:
                self.stop()
                raise Unavailable(f"`ray start` could not run: {e}") from None
            finally:
                log.close()
            self.procs.append(proc)
            if i == 0:
                self._wait_ready(1)
        self._wait_ready(self.nodes)

    def resources(self) -> dict:
        """The cluster's nodes and resources, asked from a fresh driver."""
        code = (
            "import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps({'nodes': sum(1 for n in ray.nodes() if n['Alive']), 'resources': ray.cluster_resources()}))" % self.address
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
        if out.returncode != 0:
            raise Unavailable(out.stderr.decode(errors="replace")[-800:])
        return json.loads(out.stdout.decode().strip().splitlines()[-1])

    def _wait_ready(self, nodes: int) -> None:
        deadline = time.time() + READY_SECONDS
        last = ""
        while time.time() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                self.stop()
                raise Unavailable(f"a Ray node exited at start (code {dead[0].returncode}):\n{self.log_tail()}")
            try:
                info = self.resources()
                if info["nodes"] >= nodes:
                    return
                last = f"{info['nodes']} of {nodes} nodes up"
            except (Unavailable, subprocess.TimeoutExpired, ValueError, IndexError) as e:
                last = str(e)[-400:]
            time.sleep(1.0)
        self.stop()
        raise Unavailable(f"the cluster was not ready after {READY_SECONDS:.0f} s ({last})")

    def log_tail(self, n: int = 3000) -> str:
        parts = []
        for log in sorted(self.workdir.glob("node*.log")):
            parts.append(f"--- {log.name}\n" + log.read_bytes()[-n:].decode(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        # Workers first (reverse order), then the head, each node by its own process group.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # raylet, workers and agents that outlived it
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
