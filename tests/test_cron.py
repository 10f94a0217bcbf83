"""Cron inputs: a repo of ticks made with the pipeline, ticks committed when
due (by `dpl run`, `dpl run --watch`, `dpl run-cron`), each tick a datum."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time

import pytest

from dpl.engine import Store
from dpl.engine.cron import latest_due, next_due, parse_time
from dplcli import dpl, popen
from test_pipelines import jobs, outputs, write_spec

# Each datum writes which tick it saw: one output file per tick.
STEP = ["sh", "-c", "for f in /pfs/tick/*; do echo ran > /pfs/out/$(basename $f); done"]


def cron_spec(schedule="@every 1h", **cron):
    return {"pipeline": {"name": "poll"}, "transform": {"cmd": STEP},
            "input": {"cron": {"name": "tick", "spec": schedule, **cron}}}


def files(store, repo) -> list[str]:
    return sorted(json.loads(dpl("list-file", f"{repo}@master", "-o", "json", store=store).stdout), key=lambda f: f["path"])


def test_schedules_name_the_latest_tick_due():
    t = parse_time("2026-11-26T10:07:30Z")
    assert next_due("@every 90s", t) == t + 90
    assert latest_due("@every 90s", t, t + 89) is None
    assert latest_due("@every 90s", t, t + 400) == t + 360  # missed ticks collapse into the latest
    assert next_due("*/10 * * * *", t) == parse_time("2026-11-26T10:10:00Z")
    assert latest_due("@hourly", t, parse_time("2026-11-26T13:00:00Z")) == parse_time("2026-11-26T13:00:00Z")
    assert latest_due("@daily", t, parse_time("2026-11-26T23:59:59Z")) is None


def test_run_cron_ticks_accumulate_as_datums_and_earlier_outputs_carry_forward(store, tmp_path):
    dpl("create-pipeline", write_spec(tmp_path, cron_spec()), store=store)
    repos = {r["name"] for r in json.loads(dpl("list-repo", "-o", "json", store=store).stdout)}
    assert {"poll", "poll_tick"} <= repos
    assert json.loads(dpl("list-commit", "poll_tick", "-o", "json", store=store).stdout) == []  # no tick before its time

    first = dpl("run-cron", "poll", store=store).stderr.decode()
    assert "cron tick poll_tick@" in first and "for pipeline poll" in first
    time.sleep(1.1)  # tick names have whole seconds
    dpl("run-cron", "poll", store=store)
    ticks = [f["path"] for f in files(store, "poll_tick")]
    assert len(ticks) == 2 and all(dt.datetime.fromisoformat(p[1:].replace("Z", "+00:00")) for p in ticks)
    assert sorted(outputs(store, "poll")) == ticks
    last = jobs(store, "poll")[0]
    assert (last["processed"], last["skipped"]) == (1, 1)
    commits = json.loads(dpl("list-commit", "poll_tick", "-o", "json", store=store).stdout)
    assert all(c["description"].startswith("cron tick ") for c in commits)


def test_overwrite_keeps_only_the_latest_tick(store, tmp_path):
    dpl("create-pipeline", write_spec(tmp_path, cron_spec(overwrite=True)), store=store)
    dpl("run-cron", "poll", store=store)
    time.sleep(1.1)
    dpl("run-cron", "poll", store=store)
    ticks = [f["path"] for f in files(store, "poll_tick")]
    assert len(ticks) == 1
    assert sorted(outputs(store, "poll")) == ticks
    assert len(json.loads(dpl("list-commit", "poll_tick", "-o", "json", store=store).stdout)) == 2


def test_dpl_run_commits_the_due_tick_once(store, tmp_path):
    # Hourly since 3.5 hours ago: three ticks were missed, the next is 30 minutes away.
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=3, minutes=30)
    dpl("create-pipeline", write_spec(tmp_path, cron_spec("@every 1h", start=start.strftime("%Y-%m-%dT%H:%M:%SZ"))), store=store)
    said = dpl("run", store=store).stderr.decode()
    assert said.count("cron tick") == 1  # one tick, named by the latest missed time
    (tick,) = [f["path"] for f in files(store, "poll_tick")]
    assert parse_time(tick[1:]) == start.timestamp() + 3 * 3600
    assert sorted(outputs(store, "poll")) == [tick]
    assert "cron tick" not in dpl("run", store=store).stderr.decode()  # nothing due again for 30 minutes


def test_run_watch_keeps_ticking_and_running_jobs_until_interrupted(store, tmp_path):
    dpl("create-pipeline", write_spec(tmp_path, cron_spec("@every 2s")), store=store)
    watcher = popen("run", "--watch", store=store)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(json.loads(dpl("list-job", "-p", "poll", "-o", "json", store=store).stdout)) < 3:
            time.sleep(0.5)  # the job at creation, then a job per tick: wait for two ticks' jobs
    finally:
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err.decode()
    assert err.decode().count("cron tick") >= 2 and "Traceback" not in err.decode()
    dpl("run", store=store)  # finishes a job the interrupt cut short (and may tick once more)
    ticks = [f["path"] for f in files(store, "poll_tick")]
    assert len(ticks) >= 2 and sorted(outputs(store, "poll")) == ticks
    s = Store.open(store)
    try:
        assert all(j["state"] == "success" for j in s.list_jobs("poll"))
    finally:
        s.close()


@pytest.mark.parametrize("cron, needle", [
    ({"spec": "every minute"}, "spec.input.cron.spec: 'every minute' is not a schedule"),
    ({"spec": "@every 0s"}, "spec.input.cron.spec"),
    ({"spec": "61 * * * *"}, "spec.input.cron.spec"),
    ({"spec": "@daily", "start": "yesterday"}, "spec.input.cron.start: 'yesterday' is not an RFC 3339 time"),
    ({"spec": "@daily", "repo": "../x"}, "spec.input.cron: the cron repo"),
])
def test_bad_cron_inputs_are_refused_and_create_nothing(store, tmp_path, cron, needle):
    spec = {"pipeline": {"name": "poll"}, "transform": {"cmd": STEP}, "input": {"cron": {"name": "tick", **cron}}}
    proc = dpl("create-pipeline", write_spec(tmp_path, spec), store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and needle in err and "Traceback" not in err, err
    assert json.loads(dpl("list-repo", "-o", "json", store=store).stdout) == []


def test_run_cron_of_a_pipeline_without_cron_says_so(store, tmp_path):
    dpl("create-repo", "data", store=store)
    spec = {"pipeline": {"name": "plain"}, "transform": {"cmd": STEP}, "input": {"pfs": {"repo": "data", "glob": "/*"}}}
    dpl("create-pipeline", write_spec(tmp_path, spec), store=store)
    proc = dpl("run-cron", "plain", store=store, check=False)
    assert proc.returncode == 1 and "has no cron input" in proc.stderr.decode()
    proc = dpl("run-cron", "nosuch", store=store, check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr.decode()


def test_inspect_pipeline_shows_the_next_tick(store, tmp_path):
    dpl("create-pipeline", write_spec(tmp_path, cron_spec("@every 1h")), store=store)
    info = json.loads(dpl("inspect-pipeline", "poll", "-o", "json", store=store).stdout)
    (c,) = info["cron"]
    assert (c["repo"], c["spec"], c["overwrite"]) == ("poll_tick", "@every 1h", False)
    assert 3500 < parse_time(c["next_tick"]) - time.time() <= 3600  # ISO 8601 in JSON, like every time
    text = dpl("inspect-pipeline", "poll", store=store).stdout.decode()
    assert "Cron:             tick = poll_tick, @every 1h, next tick " in text and "(in 59 minutes)" in text


def test_a_cron_repo_deleted_by_force_takes_its_pipeline_and_other_pipelines_still_run(store, tmp_path):
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dpl("create-pipeline", write_spec(tmp_path, cron_spec("@every 2s", start=start)), store=store)
    other = cron_spec("@every 2s", start=start)
    other["pipeline"]["name"] = "poll2"
    dpl("create-pipeline", write_spec(tmp_path, other), store=store)
    refused = dpl("delete-repo", "poll_tick", store=store, check=False)
    assert refused.returncode != 0 and "poll" in refused.stderr.decode()
    deleted = dpl("delete-repo", "poll_tick", "--force", "--yes", store=store).stderr.decode()
    assert "pipelines: poll" in deleted  # no pipeline is left reading a repo that is gone (issue 13)
    assert [p["name"] for p in json.loads(dpl("list-pipeline", "-o", "json", store=store).stdout)] == ["poll2"]
    proc = dpl("run", store=store, check=False)
    err = proc.stderr.decode()
    assert "poll_tick" not in err and "Traceback" not in err
    assert "cron tick poll2_tick@" in err
    assert len(files(store, "poll2_tick")) == 1
