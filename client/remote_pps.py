"""`RemoteStore`'s pipeline side: pipelines, jobs, datums, logs, provenance
and secrets over /api/v1 (Pachyderm's "pps", where `remote.py` is "pfs":
repos, commits and files).  A mixin: it calls only the HTTP helpers of the
class it is mixed into (`_get`, `_call`, `_all`, `_as_commit`).

Jobs run on the server (its scheduler starts them when a commit lands), so
`run_jobs` waits for them instead of running them, and `tick_due` leaves
cron ticks to the server.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from ..storage.errors import DplError
from ..storage.metadata.commits import Commit

UNFINISHED = ("created", "running")


def _q(segment: str) -> str:
    """One path segment, escaped (names may hold any character a URL path reserves)."""
    return quote(segment, safe="")


class PipelineCalls:
    # ----------------------------------------------------------- pipelines

    def create_pipeline(self, text: str, *, source: str = "<spec>", update: bool = False, reprocess: bool = False) -> dict:
        body = {"spec": text, "source": source, "reprocess": reprocess}
        return self._call("PUT" if update else "POST", "/pipelines", body)

    def update_pipeline(self, text: str, *, source: str = "<spec>", reprocess: bool = False) -> dict:
        return self.create_pipeline(text, source=source, update=True, reprocess=reprocess)

    def list_pipelines(self) -> list[dict]:
        return self._all("/pipelines")

    def inspect_pipeline(self, name: str, *, history: bool = False) -> dict:
        return self._get(f"/pipelines/{_q(name)}", history=history)

    def delete_pipeline(self, name: str, *, force: bool = False, keep_repo: bool = False) -> None:
        self._call("DELETE", f"/pipelines/{_q(name)}", force=force, keep_repo=keep_repo)

    def stop_pipeline(self, name: str) -> None:
        self._call("POST", f"/pipelines/{_q(name)}/stop")

    def start_pipeline(self, name: str) -> None:
        self._call("POST", f"/pipelines/{_q(name)}/start")

    def pipeline_wave(self, name: str) -> str | None:
        return self._get(f"/pipelines/{_q(name)}/wave")["wave"]

    def run_cron(self, pipeline: str) -> list[tuple[Any, Commit]]:
        return [(SimpleNamespace(**t["cron"]), self._as_commit(t["commit"])) for t in self._call("POST", f"/pipelines/{_q(pipeline)}/cron")]

    def tick_due(self, now: float | None = None) -> list:
        return []  # the server ticks cron inputs on schedule

    # ----------------------------------------------------------------- jobs

    def run_jobs(self, wave: str | None = None, *, executor: str | None = None, progress=None, wait: bool = True) -> list[dict]:
        """Wait until the server's scheduler has run the jobs of `wave` (or every
        job pending now); return those jobs, finished."""
        if not wait:
            return []
        pending = [j for j in self.list_jobs(wave=wave) if j["state"] in UNFINISHED]
        keys = {(j["pipeline"], j["id"]) for j in pending}
        pause = 0.05
        while keys:
            jobs = {(j["pipeline"], j["id"]): j for j in self.list_jobs(wave=wave) if (j["pipeline"], j["id"]) in keys}
            for j in jobs.values():
                if progress and j["total"]:
                    progress(j, (j["processed"] or 0) + (j["skipped"] or 0) + (j["failed"] or 0), j["total"])
            if all(j["state"] not in UNFINISHED for j in jobs.values()):
                return [jobs[k] for k in sorted(jobs, key=lambda k: jobs[k]["created"]) if k in jobs]
            time.sleep(pause)
            pause = min(0.5, pause * 1.5)
        return []

    def watch(self, *, executor: str | None = None, progress=None, on_tick=None, on_job=None, stop=None, poll: float = 2.0) -> None:
        """Report jobs as the server finishes them, until `stop` is set (or Ctrl-C)."""
        seen = {(j["pipeline"], j["id"]) for j in self.list_jobs() if j["state"] not in UNFINISHED}
        while stop is None or not stop.is_set():
            for j in reversed(self.list_jobs(limit=100)):
                if j["state"] not in UNFINISHED and (j["pipeline"], j["id"]) not in seen:
                    seen.add((j["pipeline"], j["id"]))
                    if on_job:
                        on_job(j)
            time.sleep(min(poll, 1.0))

    def inspect_job(self, pipeline: str | None, job: str) -> dict:
        return self._get(f"/jobs/{_q(job)}", pipeline=pipeline)

    def list_jobs(self, pipeline: str | None = None, wave: str | None = None, limit: int | None = None) -> list[dict]:
        return self._all("/jobs", limit, pipeline=pipeline, wave=wave)

    def list_datums(self, pipeline: str | None, job: str) -> list[dict]:
        return self._all(f"/jobs/{_q(job)}/datums", pipeline=pipeline)

    def inspect_datum(self, pipeline: str | None, job: str, datum: str) -> dict:
        return self._get(f"/jobs/{_q(job)}/datums/{_q(datum)}", pipeline=pipeline)

    def datum_logs(self, pipeline: str | None, job: str, datum: str | None = None) -> list[dict]:
        return self._all(f"/jobs/{_q(job)}/logs", pipeline=pipeline, datum=datum)

    def wait_job(self, pipeline: str | None, job: str, *, timeout: float | None = None) -> dict:
        """The job once the server's scheduler has finished it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.inspect_job(pipeline, job)
            if info["state"] not in UNFINISHED:
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise DplError(f"Job {info['pipeline']}@{info['id'][:12]} is still {info['state']} after {timeout:g} s.", hint="Wait longer.")
            time.sleep(0.2)

    def latest_job(self, pipeline: str) -> str:
        jobs = self.list_jobs(pipeline, limit=1)
        if not jobs:
            raise DplError(f"Pipeline {pipeline!r} has no job yet.", hint="Put data in its inputs.")
        return jobs[0]["id"]

    def follow_logs(self, pipeline: str | None, job: str, datum: str | None = None):
        """Each datum's logs as it finishes, until the job is finished (polled over HTTP)."""
        shown: set[str] = set()
        while True:
            info = self.inspect_job(pipeline, job)
            try:
                entries = self.datum_logs(info["pipeline"], info["id"], datum)
            except DplError:
                entries = []  # that datum has not run yet
            for e in entries:
                if e["datum"] + e["state"] not in shown and e["state"] not in UNFINISHED:
                    shown.add(e["datum"] + e["state"])
                    yield e
            if info["state"] not in UNFINISHED:
                return
            time.sleep(0.3)

    # ----------------------------------------------------------- provenance

    def commit_provenance(self, repo: str, commit_id: str) -> dict:
        return self._get(f"/repos/{_q(repo)}/commits/{_q(commit_id)}/provenance")

    def origin_commits(self, repo: str, commit_id: str) -> list[dict]:
        return self._get(f"/repos/{_q(repo)}/commits/{_q(commit_id)}/origins")

    def file_provenance(self, repo: str, ref: str | None, path: str) -> dict:
        return self._get("/provenance", repo=repo, ref=ref, path=path)

    def file_subvenance(self, repo: str, ref: str | None, path: str) -> dict:
        return self._get("/subvenance", repo=repo, ref=ref, path=path)

    def why(self, pipeline: str | None, job: str) -> dict:
        return self._get(f"/jobs/{_q(job)}/why", pipeline=pipeline)

    def dag(self) -> dict:
        return self._get("/dag")

    # -------------------------------------------------------------- secrets

    def create_secret(self, name: str, data: dict[str, str], *, overwrite: bool = False) -> dict:
        return self._call("POST", "/secrets", {"name": name, "data": data, "overwrite": overwrite})

    def list_secrets(self) -> list[dict]:
        return self._all("/secrets")

    def inspect_secret(self, name: str) -> dict:
        return self._get(f"/secrets/{_q(name)}")

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", f"/secrets/{_q(name)}")

    # ------------------------------------------------- job and pipeline control

    def stop_job(self, pipeline: str | None, job: str) -> dict:
        return self._call("POST", f"/jobs/{_q(job)}/stop", pipeline=pipeline)

    def delete_job(self, pipeline: str | None, job: str) -> dict:
        return self._call("DELETE", f"/jobs/{_q(job)}", pipeline=pipeline)

    def restart_datum(self, pipeline: str | None, job: str, datum: str | None = None, *, all_failed: bool = False) -> str:
        return self._call("POST", f"/jobs/{_q(job)}/restart", pipeline=pipeline, datum=datum, all_failed=all_failed)["wave"]

    def validate_pipeline(self, text: str, *, source: str = "<spec>") -> list[dict]:
        return self._call("POST", "/pipelines/validate", {"spec": text, "source": source})

    def rerun_pipeline(self, name: str, *, reprocess: bool = False) -> str:
        return self._call("POST", f"/pipelines/{_q(name)}/rerun", reprocess=reprocess)["wave"]

    def edit_pipeline(self, name: str, text: str, *, reprocess: bool = False) -> dict:
        return self._call("POST", f"/pipelines/{_q(name)}/edit", {"spec": text, "reprocess": reprocess})
