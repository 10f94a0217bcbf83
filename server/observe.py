"""What `dpl serve` tells its operators: one JSON log line per request and
per job event, and Prometheus metrics.

The metrics live in a registry of their own (not prometheus_client's global
one), so two servers in one process (tests) never count into each other.
Job and datum counts are read from the store when /metrics is scraped rather
than counted as events: a restarted server, or another machine sharing the
store, still reports the truth.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

_write_lock = threading.Lock()


def log_event(event: str, **fields) -> None:
    """One JSON object per line on stderr: what log shippers read without a parser of ours."""
    line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, ensure_ascii=False)
    with _write_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class JsonLines(logging.Handler):
    """Python logging (uvicorn's own warnings, the engine's notes) as the same JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log_event("log", logger=record.name, level=record.levelname.lower(), message=record.getMessage())
        except Exception:
            self.handleError(record)


def route_logging() -> None:
    root = logging.getLogger()
    root.handlers[:] = [JsonLines()]
    root.setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class Metrics:
    def __init__(self, store):
        self.registry = CollectorRegistry()
        self.requests = Counter("dpl_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "dpl_http_request_seconds", "Time to answer an HTTP request (to its first byte for streamed bodies).",
            ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # What came over the network: an upload that negotiates chunks should cost about the change, not the file.
        self.received = Counter("dpl_http_received_bytes", "Request body bytes received.", ["method", "route"], registry=self.registry)
        self.commits = Counter("dpl_commits_landed", "Commits this server landed (puts, deletes, finished commits, cron ticks).",
                               ["repo"], registry=self.registry)
        self.jobs_run = Counter("dpl_jobs_run", "Jobs this server's scheduler ran, by final state.", ["pipeline", "state"],
                                registry=self.registry)
        self.scheduler_up = Gauge("dpl_scheduler_running", "1 while the scheduler takes work.", registry=self.registry)
        self.registry.register(_StoreCollector(store))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    """Jobs and datums by state, read from the store at scrape time."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        jobs = GaugeMetricFamily("dpl_jobs", "Jobs in the store, by pipeline and state.", labels=["pipeline", "state"])
        datums = GaugeMetricFamily("dpl_datums", "Datums of each pipeline's newest job, by what the job did with them.",
                                   labels=["pipeline", "state"])
        try:
            rows = self.store.list_jobs()
        except Exception:  # a scrape must answer even while the store is unwell
            rows = []
        counts: dict[tuple[str, str], int] = {}
        newest: dict[str, dict] = {}
        for j in rows:
            counts[(j["pipeline"], j["state"])] = counts.get((j["pipeline"], j["state"]), 0) + 1
            newest.setdefault(j["pipeline"], j)  # listed newest first
        for (pipeline, state), n in sorted(counts.items()):
            jobs.add_metric([pipeline, state], n)
        for pipeline, j in sorted(newest.items()):
            for state in ("processed", "skipped", "failed"):
                datums.add_metric([pipeline, state], j.get(state) or 0)
        yield jobs
        yield datums
