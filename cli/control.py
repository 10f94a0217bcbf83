"""Commands that act on jobs and pipelines once they exist: wait-job, stop-job,
delete-job, restart-datum, validate-pipeline, edit-pipeline, rerun-pipeline.

Each parses, makes one engine call (engine/jobcontrol.py, engine/pipelines.py)
and renders; like cli/pipelines.py, a command that starts work runs it here
unless --no-wait, because the embedded default has no daemon.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from . import render
from .jobreport import JobProgress, job_summary, run_and_report, stoppable
from .pipelines import ExecutorOpt, NoWaitOpt, OutputOpt, _read_spec, _store, job_ref
from .render import Output
from ..storage.errors import DplError


def register(app: typer.Typer) -> None:
    @app.command("wait-job")
    def wait_job(
        job: str = typer.Argument(..., metavar="PIPELINE@JOB|JOB"),
        executor: Optional[str] = ExecutorOpt,
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up after this many seconds."),
        output: Output = OutputOpt,
    ):
        """Wait until a job is finished (running its wave here if nobody else is); the exit code says whether it succeeded."""
        pipeline, jid = job_ref(job)
        s = _store()
        row = s.inspect_job(pipeline, jid)
        if row["state"] in ("created", "running") and hasattr(s, "run_jobs"):
            with stoppable(), JobProgress() as progress:
                s.run_jobs(row["id"], executor=executor, progress=progress)
        info = s.wait_job(row["pipeline"], row["id"], timeout=timeout)
        if output == Output.json:
            render.emit_json(info)
        else:
            render.info(job_summary(info))
        if info["state"] != "success":
            raise DplError(f"Job {info['pipeline']}@{info['id'][:12]} finished {info['state']}.",
                           hint=f"See `dpl inspect-job {info['pipeline']}@{info['id'][:12]}`.")

    @app.command("stop-job")
    def stop_job(job: str = typer.Argument(..., metavar="PIPELINE@JOB|JOB")):
        """Stop (kill) an unfinished job: it will not run, its output is not landed, the jobs after it in its wave are unrunnable."""
        pipeline, jid = job_ref(job)
        info = _store().stop_job(pipeline, jid)
        render.info(f"stopped job {info['pipeline']}@{info['id'][:12]} ({info['state']})")

    @app.command("delete-job")
    def delete_job(job: str = typer.Argument(..., metavar="PIPELINE@JOB|JOB"), output: Output = OutputOpt):
        """Delete a finished job, its datum records and logs (and its output commit, if it was the newest)."""
        pipeline, jid = job_ref(job)
        result = _store().delete_job(pipeline, jid)
        render.emit_json(result) if output == Output.json else render.removed(result)

    @app.command("restart-datum")
    def restart_datum(
        job: str = typer.Argument(..., metavar="PIPELINE@JOB|JOB"),
        datum: Optional[str] = typer.Argument(None, metavar="[DATUM]"),
        all_failed: bool = typer.Option(False, "--all-failed", help="Every datum of the job that failed (or did not run)."),
        no_wait: bool = NoWaitOpt,
        executor: Optional[str] = ExecutorOpt,
    ):
        """Run a finished job's failed datums again, in a new job of its pipeline (datums that succeeded are skipped)."""
        pipeline, jid = job_ref(job)
        s = _store()
        wave = s.restart_datum(pipeline, jid, datum, all_failed=all_failed)
        render.info(f"restarting in job {wave[:12]}")
        if not no_wait:
            run_and_report(s, wave, executor, fail=True)

    @app.command("validate-pipeline")
    def validate_pipeline(spec: str = typer.Argument(..., metavar="SPEC", help="The spec file (JSON or YAML), or - for stdin."),
                          output: Output = OutputOpt):
        """Check a spec file as create-pipeline would (schema, inputs, cycles), changing nothing."""
        text, source = _read_spec(spec, None)
        checked = _store().validate_pipeline(text, source=source)
        if output == Output.json:
            render.emit_json(checked)
            return
        for c in checked:
            render.info(f"{source}: pipeline {c['name']} is valid (would {c['action']} it)")
            for w in c["warnings"]:
                render.info(f"warning: {w}")

    @app.command("edit-pipeline")
    def edit_pipeline(
        name: str,
        editor: Optional[str] = typer.Option(None, "--editor", help="The editor to run (default: $EDITOR, else vi)."),
        reprocess: bool = typer.Option(False, "--reprocess", help="Reprocess every datum, even those the change does not affect."),
        no_wait: bool = NoWaitOpt,
        executor: Optional[str] = ExecutorOpt,
    ):
        """Edit a pipeline's spec in $EDITOR; the edited spec is validated, then the pipeline updated."""
        import os
        import shlex
        import subprocess
        import tempfile

        s = _store()
        before = json.dumps(s.inspect_pipeline(name)["spec"], indent=2) + "\n"
        fd, path = tempfile.mkstemp(prefix=f"dpl-{name}-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(before)
            command = shlex.split(editor or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
            try:
                code = subprocess.call(command + [path])
            except FileNotFoundError:
                raise DplError(f"The editor {command[0]!r} was not found.", hint="Set $EDITOR, or pass --editor.") from None
            if code != 0:
                raise DplError(f"The editor exited with status {code}; the pipeline was not changed.")
            with open(path, encoding="utf-8") as f:
                after = f.read()
        finally:
            os.unlink(path)
        if _same_json(after, before):
            render.info(f"pipeline {name} is unchanged")
            return
        info = s.edit_pipeline(name, after, reprocess=reprocess)
        render.info(f"updated pipeline {info['name']} to version {info['version']}")
        for warning in info.get("warnings", ()):
            render.info(f"warning: {warning}")
        if not no_wait:
            run_and_report(s, s.pipeline_wave(name), executor)

    @app.command("rerun-pipeline")
    def rerun_pipeline(
        name: str,
        reprocess: bool = typer.Option(False, "--reprocess", help="Run every datum again, not only those never processed."),
        no_wait: bool = NoWaitOpt,
        executor: Optional[str] = ExecutorOpt,
    ):
        """Run a pipeline again over its current inputs (--reprocess: every datum, in a new version of the same spec)."""
        s = _store()
        wave = s.rerun_pipeline(name, reprocess=reprocess)
        render.info(f"rerunning pipeline {name} in job {wave[:12]}")
        if not no_wait:
            run_and_report(s, wave, executor, fail=True)


def _same_json(a: str, b: str) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False  # not JSON (YAML, or a mistake): the engine reads it and says what is wrong
