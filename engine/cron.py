"""Cron inputs: pipelines that run on a schedule, as in Pachyderm.

`{"cron": {"name": "tick", "spec": "@every 60s"}}` is a repo made with the
pipeline (`<pipeline>_<name>` unless `repo` names another).  Each tick
commits an empty file named by the tick's time (RFC 3339, UTC) to its
master branch, and that commit starts the pipeline's job like any other
commit.  The pipeline sees the input as `/pfs/<name>` with glob `/*`: by
default tick files accumulate, so each tick is one new datum and earlier
ticks' outputs are carried forward; with `"overwrite": true` a tick replaces
the previous tick's file, so the output holds the latest run only.

Schedules: `@every <duration>` (Go syntax, `90s`, `1h30m`), `@hourly`,
`@daily`, `@weekly`, `@monthly`, `@yearly`, or five cron fields
(`*/10 * * * *`), in UTC.  `start` (RFC 3339) is when the schedule begins;
by default, when the pipeline was created.

dpl has no daemon.  A tick that is due is committed by the next `dpl run`
(one tick however many were missed, named by the latest of them), and
`dpl run --watch` keeps ticking and running jobs until it is stopped;
`dpl run-cron PIPELINE` ticks now, off schedule, as `pachctl run cron` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..storage.errors import DplError, RepoNotFound
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata.db import Database
from .errors import InvalidSpec, PipelineNotFound

if TYPE_CHECKING:  # only for annotations: cron is imported by spec checks that need neither
    from .files import Files
    from .jobs import Jobs

log = logging.getLogger("dpl")

NAMED = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
         "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
TICK_PREFIX = "cron tick "  # commit descriptions: the tick's time follows


@dataclass(frozen=True)
class CronInput:
    pipeline: str
    name: str
    repo: str
    schedule: str
    start: str | None
    overwrite: bool

    def latest_due(self, after: float, now: float) -> float | None:
        """The latest scheduled time in (after, now], or None if none is due."""
        return latest_due(self.schedule, after, now)


def cron_inputs(pipeline: str, node: dict) -> list[CronInput]:
    """Every cron input of an input tree, in order."""
    out = []
    for kind, value in node.items():
        if kind == "cron":
            out.append(CronInput(pipeline, value["name"], value.get("repo") or f"{pipeline}_{value['name']}",
                                 value["spec"], value.get("start"), bool(value.get("overwrite", False))))
        elif kind in ("cross", "union", "join", "group"):
            for child in value:
                out.extend(cron_inputs(pipeline, child))
    return out


def as_pfs(pipeline: str, node: dict) -> dict:
    """The input tree with each cron input as the pfs input it reads: its repo, glob /*."""
    (kind, value), = node.items()
    if kind == "cron":
        (ci,) = cron_inputs(pipeline, node)
        return {"pfs": {"repo": ci.repo, "branch": "master", "glob": "/*", "name": ci.name}}
    if kind in ("cross", "union", "join", "group"):
        return {kind: [as_pfs(pipeline, child) for child in value]}
    return node


def check(where: str, value: dict) -> None:
    """A cron input's schedule and start, at create time."""
    try:
        _next_fn(value["spec"])
    except ValueError as e:
        raise InvalidSpec(f"{where}.spec: {value['spec']!r} is not a schedule ({e}).",
                          hint='Write "@every 60s", "@daily" or five cron fields like "*/10 * * * *".') from None
    if value.get("start"):
        try:
            parse_time(value["start"])
        except ValueError:
            raise InvalidSpec(f"{where}.start: {value['start']!r} is not an RFC 3339 time.", hint='Write e.g. "2026-01-01T00:00:00Z".') from None


def latest_due(schedule: str, after: float, now: float) -> float | None:
    step = _next_fn(schedule)
    first = step(after)
    if first > now:
        return None
    interval = _every(schedule)
    if interval is not None:  # constant steps: jump straight to the last one
        return after + math.floor((now - after) / interval) * interval
    from croniter import croniter

    prev = croniter(_cron_fields(schedule), dt.datetime.fromtimestamp(now, dt.timezone.utc)).get_prev(float)
    # croniter's get_prev is strictly before its base; `now` itself may be a tick.
    return now if step(prev) == now else prev


def next_due(schedule: str, after: float) -> float:
    return _next_fn(schedule)(after)


def tick_name(at: float) -> str:
    return "/" + format_time(at)


def format_time(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _every(schedule: str) -> float | None:
    if not schedule.startswith("@every"):
        return None
    from .spec import parse_duration

    rest = schedule.removeprefix("@every").strip()
    seconds = parse_duration(rest) if rest else None
    if not seconds or not re.fullmatch(r"([0-9.]+(ns|us|µs|ms|s|m|h))+", rest):
        raise ValueError("@every needs a duration such as 30s, 5m or 1h30m")
    if seconds < 1:
        raise ValueError("ticks come at most once a second")
    return seconds


def _cron_fields(schedule: str) -> str:
    return NAMED.get(schedule.strip(), schedule.strip())


def _next_fn(schedule: str) -> Callable[[float], float]:
    interval = _every(schedule)
    if interval is not None:
        return lambda after: after + interval
    from croniter import CroniterError, croniter

    fields = _cron_fields(schedule)
    if len(fields.split()) != 5:
        raise ValueError("five fields (minute hour day month weekday), @every or @daily and the like")
    try:
        croniter(fields)
    except (CroniterError, ValueError, KeyError) as e:
        raise ValueError(str(e) or "not understood") from None
    return lambda after: croniter(fields, dt.datetime.fromtimestamp(after, dt.timezone.utc)).get_next(float)


class Cron:
    """Ticks of cron inputs, committed when due; `watch` runs the jobs they start.

    Pipelines are read through the metadata layer, not the `Pipelines`
    component, which itself uses this one (to show a pipeline's next tick).
    """

    def __init__(self, db: Database, files: "Files", jobs: "Jobs"):
        self.db, self.files, self.jobs = db, files, jobs

    def cron_inputs(self, pipeline: str | None = None) -> list[CronInput]:
        rows = pipeline_rows.all_pipelines(self.db) if pipeline is None else [pipeline_rows.get(self.db, pipeline)]
        return [ci for r in rows if r is not None for ci in cron_inputs(r.name, r.spec["input"])]

    def last_tick(self, ci: CronInput) -> float:
        """When the schedule last fired: the newest tick's time, else its start
        (or the pipeline's creation), in whole seconds as tick names are."""
        head = commit_rows.head(self.db, ci.repo, "master")
        if head is not None and head.description.startswith(TICK_PREFIX):
            return parse_time(head.description.removeprefix(TICK_PREFIX))
        if head is not None:  # a commit made by hand: the schedule goes on from it
            return math.floor(head.finished)
        if ci.start:
            return parse_time(ci.start)
        return math.floor(pipeline_rows.get(self.db, ci.pipeline).created)

    def next_tick(self, ci: CronInput) -> float:
        return next_due(ci.schedule, self.last_tick(ci))

    def tick_due(self, now: float | None = None) -> list[tuple[CronInput, object]]:
        """Commit one tick to each cron input whose schedule fired since its last tick."""
        now = time.time() if now is None else now
        ticked = []
        for ci in self.cron_inputs():
            if self._pipeline_state(ci.pipeline) != "running":
                continue
            at = ci.latest_due(self.last_tick(ci), now)
            if at is None:
                continue
            try:
                ticked.append((ci, self._tick(ci, at)))
            except DplError as e:  # one broken cron input must not stop the others (or `run --watch`)
                log.warning("%s %s", e.message, e.hint or "")
        return ticked

    def run_cron(self, pipeline: str) -> list[tuple[CronInput, object]]:
        """Tick every cron input of a pipeline now, off schedule."""
        inputs = self.cron_inputs(pipeline)
        if not inputs:
            if pipeline_rows.get(self.db, pipeline) is None:
                raise PipelineNotFound(f"Pipeline {pipeline!r} does not exist.", hint="See `dpl list-pipeline`.")
            raise DplError(f"Pipeline {pipeline!r} has no cron input.", hint="run-cron ticks cron inputs; commit to a pfs input instead.")
        now = math.floor(time.time())
        return [(ci, self._tick(ci, max(now, self.last_tick(ci) + 1))) for ci in inputs]

    def watch(self, *, executor: str | None = None, progress=None, on_tick=None, on_job=None,
              stop: threading.Event | None = None, poll: float = 2.0) -> None:
        """Tick cron inputs when due and run every pending job, until `stop` is set.

        `dpl run --watch`: the daemon dpl otherwise does without.  Jobs other
        processes leave pending (`--no-wait`) are picked up within `poll`
        seconds; a failed job is reported and the loop goes on."""
        stop = stop or threading.Event()
        while not stop.is_set():
            for ci, commit in self.tick_due():
                if on_tick:
                    on_tick(ci, commit)
            for job in self.jobs.run_jobs(None, executor=executor, progress=progress, wait=False):
                if on_job:
                    on_job(job)
            due = [self.next_tick(ci) for ci in self.cron_inputs() if self._pipeline_state(ci.pipeline) == "running"]
            stop.wait(max(0.0, min([poll] + [t - time.time() for t in due])))

    def _pipeline_state(self, name: str) -> str | None:
        return pipeline_rows.state(self.db, name)

    def _tick(self, ci: CronInput, at: float):
        if not repo_rows.exists(self.db, ci.repo):
            raise RepoNotFound(f"The cron repo {ci.repo!r} of pipeline {ci.pipeline!r} is gone.",
                                   hint=f"Recreate it with `dpl create-repo {ci.repo}`, or update the pipeline.")
        return self.files.put_bytes(ci.repo, "master", {tick_name(at): b""}, replace=ci.overwrite,
                                    description=TICK_PREFIX + format_time(at))
