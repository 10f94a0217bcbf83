"""`dpl` commands for pipelines, jobs, datums and logs.

Like every command module, each command parses, makes one engine call and
renders; `register(app)` adds them to the main typer app.  Commands that
start work (create-pipeline, put-file, run, wait-commit) run the jobs in this
process and show their progress, because the embedded default has no daemon:
the CLI call that makes work is the worker, unless --no-wait.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Optional

import typer

from . import render
from .jobreport import JobProgress, job_summary, run_and_report, stoppable  # noqa: F401  (main.py's commands run jobs through run_and_report)
from .render import Output, ago, short
from ..storage.errors import DplError, InvalidRef

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")
ExecutorOpt = typer.Option(None, "--executor", "-x", help="Run datums on this executor: local, docker or ray (default: the spec's, else the store's).")
NoWaitOpt = typer.Option(False, "--no-wait", help="Return at once; `dpl run` or `dpl wait-commit` picks the work up.")


def _store():
    from .main import store

    return store()  # embedded, or a server's when --address, DPL_ADDRESS or `dpl connect` names one


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def _code_line(code: dict | None) -> str:
    """`step.sh lib/tag.sh (1a2b3c4d5e6f)`: the host code a job ran."""
    if not code or not code.get("files"):
        return "-"
    return f"{' '.join(sorted(code['files']))} ({code['hash'][:12]})"


JOB_COLUMNS = [
    ("pipeline", "PIPELINE", None),
    ("id", "JOB", short),
    ("state", "STATE", None),
    ("reason", "REASON", None),
    ("created", "STARTED", ago),
    ("duration", "DURATION", _seconds),
    ("processed", "PROCESSED", None),
    ("skipped", "SKIPPED", None),
    ("failed", "FAILED", None),
    ("total", "TOTAL", None),
]
DATUM_COLUMNS = [
    ("datum", "DATUM", short),
    ("state", "STATE", None),
    ("key", "INPUTS", None),
    ("reason", "WHY IT RAN", None),
    ("duration", "TIME", _seconds),
    ("tries", "TRIES", None),
    ("outputs", "OUTPUTS", None),
]


def job_ref(text: str) -> tuple[str | None, str]:
    """`PIPELINE@JOB` or a bare job id (prefix)."""
    pipeline, at, job = text.rpartition("@")
    if at and not (pipeline and job):
        raise InvalidRef(f"{text!r} is not a job.", hint="Write PIPELINE@JOB or a job id.")
    return (pipeline or None), job


def _read_spec(spec: Optional[str], file: Optional[str]) -> tuple[str, str]:
    path = file or spec
    if not path:
        raise DplError("No spec was given.", hint="dpl create-pipeline spec.json (or -f spec.json, or - for stdin).")
    if path == "-":
        return sys.stdin.read(), "-"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except FileNotFoundError:
        raise DplError(f"Spec file {path!r} does not exist.") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise DplError(f"Spec file {path!r} cannot be read ({e.__class__.__name__}).") from None


def register(app: typer.Typer) -> None:
    @app.command("create-pipeline")
    def create_pipeline(
        spec: Optional[str] = typer.Argument(None, metavar="SPEC", help="The spec file (JSON or YAML), or - for stdin."),
        file: Optional[str] = typer.Option(None, "--file", "-f", help="The spec file (as pachctl takes it)."),
        no_wait: bool = NoWaitOpt,
        executor: Optional[str] = ExecutorOpt,
        dry_run: bool = typer.Option(False, "--dry-run", help="Create nothing: list the datums the spec would make now, which would run and why."),
        output: Output = OutputOpt,
    ):
        """Create pipelines from a Pachyderm spec file (JSON or YAML; several specs in one file are created in order) and run their first jobs."""
        from ..engine.spec import load_specs

        s = _store()
        text, source = _read_spec(spec, file)
        if dry_run:
            from .predict import show

            show(s, text, source, output, executor)
            return
        names = []
        for one in load_specs(text, source):  # every spec is checked before the first is created
            info = s.create_pipeline(one.to_json(), source=source)
            _say_created(info, "created pipeline {name} (version {version})")
            if not info.get("transaction"):
                names.append(info["name"])
        if not no_wait:
            for name in names:
                run_and_report(s, s.pipeline_wave(name), executor)

    @app.command("update-pipeline")
    def update_pipeline(
        spec: Optional[str] = typer.Argument(None, metavar="SPEC"),
        file: Optional[str] = typer.Option(None, "--file", "-f"),
        reprocess: bool = typer.Option(False, "--reprocess", help="Reprocess every datum, even those the change does not affect."),
        no_wait: bool = NoWaitOpt,
        executor: Optional[str] = ExecutorOpt,
    ):
        """Change pipelines (every spec of the file, in order): a new version each, kept in its history."""
        from ..engine.spec import load_specs

        s = _store()
        text, source = _read_spec(spec, file)
        names = []
        for one in load_specs(text, source):
            info = s.update_pipeline(one.to_json(), source=source, reprocess=reprocess)
            _say_created(info, "updated pipeline {name} to version {version}")
            if not info.get("transaction"):
                names.append(info["name"])
        if not no_wait:
            for name in names:
                run_and_report(s, s.pipeline_wave(name), executor)

    def _say_created(info: dict, line: str) -> None:
        if info.get("transaction"):
            render.info(f"pipeline {info['name']}: queued in transaction {info['transaction'][:12]} (applied by finish-transaction)")
            return
        render.info(line.format(**info))
        for warning in info.get("warnings", ()):
            render.info(f"warning: {warning}")

    @app.command("list-pipeline")
    def list_pipeline(output: Output = OutputOpt):
        """List pipelines with their state and last job."""
        render.table(
            _store().list_pipelines(),
            [("name", "NAME", None), ("version", "VERSION", None), ("inputs", "INPUT", lambda v: ", ".join(v)),
             ("state", "STATE", None), ("last_job_state", "LAST JOB", None), ("updated", "UPDATED", ago),
             ("description", "DESCRIPTION", None)],
            output,
        )

    @app.command("inspect-pipeline")
    def inspect_pipeline(
        name: str,
        history: bool = typer.Option(False, "--history", help="Every version, with the diff of its spec."),
        output: Output = OutputOpt,
    ):
        """Show a pipeline: its spec, state, inputs (and versions with --history)."""
        info = _store().inspect_pipeline(name, history=history)
        if output == Output.json:
            render.emit_json(info)
            return
        render.record(info, output, [("name", "Name", None), ("version", "Version", None), ("state", "State", None),
                                     ("description", "Description", None), ("inputs", "Inputs", ", ".join),
                                     ("spec_hash", "Spec hash", None), ("transform_hash", "Transform hash", None),
                                     ("last_job", "Last job", short), ("last_job_state", "Last job state", None),
                                     ("updated", "Updated", ago)])
        for c in info["cron"]:
            sys.stdout.write(f"Cron:             {c['name']} = {c['repo']}, {c['spec']}{' (overwrite)' if c['overwrite'] else ''}, "
                             f"next tick {render.when(c['next_tick'])} (committed by `dpl run` or `dpl run --watch`)\n")
        sys.stdout.write("Spec:\n" + json.dumps(info["spec"], indent=2) + "\n")
        for v in info.get("history", []):
            code = v["code"]
            where = f" code {code['head'][:12]}{' (dirty)' if code.get('dirty') else ''}" if code.get("head") else ""
            flags = " transform changed" if v["transform_changed"] else ""
            flags += " reprocess" if v["reprocess"] else ""
            sys.stdout.write(f"\n--- version {v['version']} ({ago(v['created'])}, spec {v['spec_hash'][:12]}{where}){flags}\n")
            sys.stdout.write(v["diff"])

    @app.command("delete-pipeline")
    def delete_pipeline(
        name: str,
        force: bool = typer.Option(False, "--force", "-f", help="Delete even if other pipelines read its output."),
        keep_repo: bool = typer.Option(False, "--keep-repo", help="Keep the output repo and its commits."),
    ):
        """Delete a pipeline (and its output repo, unless --keep-repo)."""
        _store().delete_pipeline(name, force=force, keep_repo=keep_repo)
        render.info(f"deleted pipeline {name}")

    @app.command("stop-pipeline")
    def stop_pipeline(name: str):
        """Stop a pipeline: new commits start no job for it until start-pipeline."""
        _store().stop_pipeline(name)

    @app.command("start-pipeline")
    def start_pipeline(name: str, no_wait: bool = NoWaitOpt, executor: Optional[str] = ExecutorOpt):
        """Restart a stopped pipeline; it processes its inputs as they are now."""
        s = _store()
        s.start_pipeline(name)
        if not no_wait:
            run_and_report(s, s.pipeline_wave(name), executor)

    @app.command("list-job")
    def list_job(
        wave: Optional[str] = typer.Argument(None, metavar="[ID|PIPELINE]", help="Only the jobs of this global id, or of this pipeline."),
        pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p"),
        number: Optional[int] = typer.Option(None, "--number", "-n", help="At most this many."),
        output: Output = OutputOpt,
    ):
        """List jobs, newest first: all of them, a global id's, or (list-job NAME) a pipeline's."""
        s = _store()
        hexadecimal = wave is not None and all(c in "0123456789abcdef" for c in wave.lower())
        jobs = s.list_jobs(pipeline, wave, number) if wave is None or hexadecimal else []
        if wave is not None and not jobs:  # no job has that id: `list-job NAME` asks for a pipeline's jobs
            from ..engine.errors import JobNotFound, PipelineNotFound

            if pipeline:
                raise JobNotFound(f"Pipeline {pipeline!r} has no job with the id {wave!r}.", hint=f"See `dpl list-job -p {pipeline}`.")
            try:
                jobs = s.list_jobs(wave, None, number)
            except PipelineNotFound as e:
                if not hexadecimal:
                    raise
                raise JobNotFound(f"No job has the id {wave!r}, and no pipeline is called that.", hint="See `dpl list-job` and `dpl list-pipeline`.") from e
        render.table(jobs, JOB_COLUMNS, output)

    @app.command("inspect-job")
    def inspect_job(job: str = typer.Argument(..., metavar="PIPELINE@JOB"), output: Output = OutputOpt):
        """Show a job: state, datums processed / skipped / failed, input and output commits, and why datums ran."""
        pipeline, jid = job_ref(job)
        s = _store()
        info = s.inspect_job(pipeline, jid)
        info["why"] = s.why(info["pipeline"], info["id"]) if hasattr(s, "why") else None
        if output == Output.json:
            render.emit_json(info)
            return
        render.record(info, output, [("pipeline", "Pipeline", None), ("id", "Job", None), ("version", "Pipeline version", None),
                                     ("state", "State", None), ("reason", "Started by", None), ("created", "Created", ago),
                                     ("duration", "Duration", _seconds), ("total", "Datums", None),
                                     ("processed", "Processed", None), ("skipped", "Skipped", None), ("failed", "Failed", None),
                                     ("executor", "Executor", lambda e: " ".join(f"{k}={v}" for k, v in (e or {}).items()) or "-"),
                                     ("code", "Code", _code_line),
                                     ("output_commit", "Output commit", None)])
        for i in info["inputs"]:
            sys.stdout.write(f"Input:            {i['name']} = {i['repo']}@{i['commit'] or '(empty)'} (branch {i['branch']})\n")
        if info["why"]:
            sys.stdout.write("Why datums ran:\n")
            for reason, count in info["why"]["reasons"].items():
                sys.stdout.write(f"  {count:>6}  {reason}\n")
        if info["error"]:
            sys.stdout.write(f"Error:\n{info['error']}\n")

    @app.command("list-datum")
    def list_datum(
        job: Optional[str] = typer.Argument(None, metavar="PIPELINE@JOB"),
        file: Optional[str] = typer.Option(None, "--file", "-f", help="A spec: list the datums it would make now (runs nothing)."),
        output: Output = OutputOpt,
    ):
        """List every datum of a job and what happened to it: success, failed, skipped (processed before), or not-run.

        With -f spec.json: the datums that spec would make from the current inputs, which would run and why."""
        if file:
            from .predict import show

            show(_store(), *_read_spec(None, file), output)
            return
        if not job:
            raise DplError("list-datum needs a job or a spec.", hint="dpl list-datum PIPELINE@JOB, or dpl list-datum -f spec.json.")
        pipeline, jid = job_ref(job)
        render.table(_store().list_datums(pipeline, jid), DATUM_COLUMNS, output)

    @app.command("inspect-datum")
    def inspect_datum(job: str = typer.Argument(..., metavar="PIPELINE@JOB"), datum: str = typer.Argument(...), output: Output = OutputOpt):
        """Show one datum: its input files, state, time, tries and outputs."""
        pipeline, jid = job_ref(job)
        info = _store().inspect_datum(pipeline, jid, datum)
        if output == Output.json:
            render.emit_json(info)
            return
        render.record(info, output, [("datum", "Datum", None), ("job", "Job", None), ("key", "Inputs", None), ("state", "State", None),
                                     ("reason", "Why it ran", None), ("started", "Started", ago), ("duration", "Duration", _seconds),
                                     ("tries", "Tries", None), ("exit_code", "Exit code", None), ("outputs", "Output files", None),
                                     ("error", "Error", None), ("carried_from_job", "Processed by job", None)])
        for inp in info["inputs"]:
            sys.stdout.write(f"Input {inp['name']} ({inp['repo']}@{inp['commit'][:12]}) {inp['path']}:\n")
            for path, h, size in inp["files"][:50]:
                sys.stdout.write(f"  {path}  {render.size(size)}  {h[:16]}\n")
            if len(inp["files"]) > 50:
                sys.stdout.write(f"  ... and {len(inp['files']) - 50} more\n")

    @app.command("logs")
    def logs(
        job: Optional[str] = typer.Option(None, "--job", "-j", help="PIPELINE@JOB or a job id (default with --pipeline: its newest job)."),
        datum: Optional[str] = typer.Option(None, "--datum", "-d", help="Only this datum (id or prefix)."),
        pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="The pipeline's jobs (its newest one unless --job)."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing each datum's logs as it finishes, until the job is done."),
        output: Output = OutputOpt,
    ):
        """Show the stdout and stderr of a job's datums (-f: follow a running job)."""
        if job is None and pipeline is None:
            raise DplError("logs needs a job or a pipeline.", hint="dpl logs --job PIPELINE@JOB, or dpl logs --pipeline P.")
        s = _store()
        p, jid = job_ref(job) if job else (pipeline, s.latest_job(pipeline))
        if follow:
            try:
                for e in s.follow_logs(pipeline or p, jid, datum):
                    _say_log(e, output)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                pass  # Ctrl-C ends a follow: not a failure
            return
        entries = s.datum_logs(pipeline or p, jid, datum)
        if output == Output.json:
            render.emit_json(entries)
            return
        for e in entries:
            _say_log(e, output)

    def _say_log(e: dict, output: Output) -> None:
        if output == Output.json:  # followed: one JSON object a line, as it comes
            sys.stdout.write(json.dumps(e) + "\n")
            return
        sys.stdout.write(f"== datum {e['datum'][:12]} {e['key']} ({e['state']})\n")
        if e["stdout"]:
            sys.stdout.write(e["stdout"] if e["stdout"].endswith("\n") else e["stdout"] + "\n")
        if e["stderr"]:
            sys.stdout.write("-- stderr\n" + (e["stderr"] if e["stderr"].endswith("\n") else e["stderr"] + "\n"))

    def _say_tick(ci, commit) -> None:
        render.info(f"cron tick {ci.repo}@{commit.id[:12]} ({commit.description.rpartition(' ')[2]}) for pipeline {ci.pipeline}")

    _job_line = job_summary

    def _say_job(job) -> None:
        """For `run --watch`, which goes on after a failure: the error's first line too."""
        render.info(_job_line(job) + (f"\n  {job['error'].splitlines()[0]}" if job["state"] != "success" and job.get("error") else ""))

    @app.command("run")
    def run(
        executor: Optional[str] = ExecutorOpt,
        watch: bool = typer.Option(False, "--watch", "-w", help="Keep going: tick cron inputs on schedule and run jobs as they come, until Ctrl-C."),
    ):
        """Run every pending job (after --no-wait, or to resume work a killed process left), ticking cron inputs that are due."""
        s = _store()
        if watch:
            render.info("watching: cron ticks and pending jobs run here until Ctrl-C")
            try:
                with stoppable(), JobProgress() as progress:
                    s.watch(executor=executor, progress=progress, on_tick=_say_tick, on_job=_say_job)
            except SystemExit as e:
                if e.code != 128 + signal.SIGINT:
                    raise
            return  # Ctrl-C is how a watch ends: not a failure
        for ci, commit in s.tick_due():
            _say_tick(ci, commit)
        with stoppable(), JobProgress() as progress:
            ran = s.run_jobs(None, executor=executor, progress=progress)
        for job in ran:
            render.info(_job_line(job))
        bad = [j for j in ran if j["state"] != "success"]
        if bad:
            ref = f"{bad[0]['pipeline']}@{bad[0]['id'][:12]}"
            raise DplError(bad[0]["error"] or "A job failed.", hint=f"See `dpl inspect-job {ref}` and `dpl logs --job {ref}`.")
        if not ran:
            render.info("no pending jobs")

    @app.command("run-cron")
    def run_cron(pipeline: str, executor: Optional[str] = ExecutorOpt, no_wait: bool = typer.Option(False, "--no-wait", help="Only tick; leave the jobs to `dpl run`.")):
        """Tick a pipeline's cron inputs now, off schedule, and run the jobs that starts."""
        s = _store()
        ticks = s.run_cron(pipeline)
        for ci, commit in ticks:
            _say_tick(ci, commit)
        if not no_wait:
            for _, commit in ticks:
                run_and_report(s, commit.id, executor, fail=True)

    @app.command("wait-commit")
    def wait_commit(commit: str = typer.Argument(..., metavar="ID|REPO@COMMIT"), executor: Optional[str] = ExecutorOpt):
        """Wait until every job of a commit's wave is done (running them here if nobody else is)."""
        s = _store()
        wave = commit.rpartition("@")[2]
        wave = s.resolve_commit(commit.partition("@")[0], wave).id if "@" in commit else s.commits_with_id(wave)[0].id
        run_and_report(s, wave, executor, fail=True)  # its exit code says whether the jobs succeeded

