"""The Store: dpl's Python API, one object over the engine's parts.

Each public method is one call to the part that owns it (`repos`, `commits`,
`files`, `history`, `waves`, `jobs`, `cron`, `pipelines`, `provenance`,
`secrets`, `maintenance`).  A part receives what it uses (the metadata
database, the chunk store, the parts it calls) and is built the first time
it is used, importing its module then, so a command imports only what it
needs: `dpl list-repo` never imports pyarrow.  The one subscription between
parts, "a commit landed, so start the downstream jobs", is wired where
`commits` is built.

It is over 400 lines because it is the whole public API in one place, one
short delegation per method, grouped by part; split, it would need mixins
again (what issue 12 removed) or make callers reach into the parts.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .repos import Repos
from .storedir import CONFIG, find_store, init_store, open_chunk_store, open_metadata
from ..storage.metadata.commits import Commit

if TYPE_CHECKING:  # the parts are imported when first used (see the properties)
    from .auth import Auth
    from .commits import Commits
    from .cron import Cron, CronInput
    from .files import Files, Source
    from .history import History
    from .jobs import Jobs
    from .maintenance import Maintenance
    from .pipelines import Pipelines
    from .provenance import Provenance
    from .secrets import Secrets
    from .waves import Waves
    # (issue 15's parts)
    from .jobcontrol import JobControl
    from .transactions import Transactions
    from .triggers import Triggers

__all__ = ["Store", "find_store", "init_store"]


class Store:
    """The Python API of dpl: one store's repos, commits, files, pipelines and jobs.

    A facade over the engine's components: each public method is one call to
    the component that owns it.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.config = json.loads((self.root / CONFIG).read_text())
        self.db = open_metadata(self.root, self.config)
        self.chunks = open_chunk_store(self.root, self.config)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> "Store":
        """Open the store at `path`, or the one found from the current directory."""
        return cls(path if path is not None else find_store())

    @classmethod
    def init(cls, path: str | os.PathLike | None = None, **options) -> "Store":
        return cls(init_store(path, **options))

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ components

    @cached_property
    def repos(self) -> Repos:
        return Repos(self.db)

    @cached_property
    def commits(self) -> "Commits":
        from .commits import Commits

        commits = Commits(self.db, self.chunks, self.repos, self.root)
        # A commit landed, so start the downstream jobs, in the landing's own transaction.
        commits.on_landed(self.waves.commit_landed)
        # ... and a branch whose trigger follows the one that moved moves too (starting its own jobs).
        commits.on_landed(self.triggers.commit_landed)
        return commits

    # ----------------------------------------------------------------- repos

    def create_repo(self, name: str, description: str = "", *, kind: str = "user") -> dict:
        return self.repos.create_repo(name, description, kind=kind)

    def inspect_repo(self, name: str) -> dict:
        return self.repos.inspect_repo(name)

    def list_repos(self) -> list[dict]:
        return self.repos.list_repos()

    def delete_repo(self, name: str, *, force: bool = False) -> dict:
        """Delete a repo; with `force` also what pipelines made from its commits (see `history`)."""
        return self.history.delete_repo(name, force=force)

    def list_branches(self, repo: str) -> list[dict]:
        return self.repos.list_branches(repo)

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> dict:
        return self.repos.create_branch(repo, branch, head)

    def delete_branch(self, repo: str, branch: str, *, force: bool = False) -> None:
        return self.repos.delete_branch(repo, branch, force=force)

    def inspect_branch(self, repo: str, branch: str) -> dict:
        return self.repos.inspect_branch(repo, branch)

    @cached_property
    def triggers(self) -> "Triggers":
        from .triggers import Triggers

        return Triggers(self.db, self.repos, self.waves.commit_landed)

    def set_trigger(self, repo: str, branch: str, source: str, *, size: int | None = None, commits: int | None = None,
                    cron: str | None = None, all_of: bool = False) -> dict:
        """`branch` moves to `source`'s head when the conditions hold (checked as commits land on `source`)."""
        return self.triggers.set_trigger(repo, branch, source, size=size, commits=commits, cron=cron, all_of=all_of)

    # --------------------------------------------------------------- commits

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        return self.repos.get_commit(repo, commit_id)

    def resolve_commit(self, repo: str, ref: str | None = None, *, allow_open: bool = False) -> Commit:
        return self.repos.resolve_commit(repo, ref, allow_open=allow_open)

    def list_commits(self, repo: str, branch: str | None = None, *, limit: int | None = None) -> list[Commit]:
        return self.repos.list_commits(repo, branch, limit=limit)

    def open_commit(self, repo: str, branch: str) -> Commit | None:
        return self.repos.open_commit(repo, branch)

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self.repos.inspect_commit(repo, ref)

    def commits_with_id(self, commit_id: str) -> list[Commit]:
        return self.repos.commits_with_id(commit_id)

    def require_ref(self, text: str):
        return self.repos.require_ref(text)

    def subscribe_commits(self, repo: str, branch: str, *, new: bool = False, poll: float = 0.25, stop=None):
        """Each commit as it becomes the branch's head, until `stop` (a threading.Event) is set."""
        return self.repos.subscribe_commits(repo, branch, new=new, poll=poll, stop=stop)

    def start_commit(self, repo: str, branch: str = "master", description: str = "", *, commit_id: str | None = None) -> Commit:
        return self.commits.start_commit(repo, branch, description, commit_id=commit_id)

    def finish_commit(self, repo: str, commit_ref: str, description: str | None = None) -> Commit:
        return self.commits.finish_commit(repo, commit_ref, description)

    @cached_property
    def transactions(self) -> "Transactions":
        from .transactions import Transactions

        return Transactions(self.db, self.commits, self.pipelines)

    def start_transaction(self) -> str:
        return self.transactions.start_transaction()

    def finish_transaction(self, txn: str | None = None) -> dict:
        return self.transactions.finish_transaction(txn)

    def delete_transaction(self, txn: str | None = None) -> dict:
        return self.transactions.delete_transaction(txn)

    def inspect_transaction(self, txn: str | None = None) -> dict:
        return self.transactions.inspect_transaction(txn)


    # ================================================ files, cron, secrets

    @cached_property
    def files(self) -> "Files":
        from .files import Files

        return Files(self.db, self.chunks, self.repos, self.commits, self.root)

    def put_files(self, repo: str, branch: str, sources: list["Source"], *, append: bool = False, description: str = "", progress=None) -> Commit:
        return self.files.put_files(repo, branch, sources, append=append, description=description, progress=progress)

    def put_bytes(self, repo: str, branch: str, files: dict[str, bytes], *, replace: bool = False, description: str = "") -> Commit:
        return self.files.put_bytes(repo, branch, files, replace=replace, description=description)

    def delete_files(self, repo: str, branch: str, paths: list[str], description: str = "") -> Commit:
        return self.files.delete_files(repo, branch, paths, description)

    def commit_table(self, commit: Commit):
        return self.files.commit_table(commit)

    def file_table(self, repo: str, ref: str | None):
        return self.files.file_table(repo, ref)

    def list_files(self, repo: str, ref: str | None, path: str = "/", *, recursive: bool = False):
        return self.files.list_files(repo, ref, path, recursive=recursive)

    def glob_files(self, repo: str, ref: str | None, pattern: str):
        return self.files.glob_files(repo, ref, pattern)

    def diff_files(self, repo: str, ref: str | None, other_repo: str | None = None, other_ref: str | None = None):
        return self.files.diff_files(repo, ref, other_repo, other_ref)

    def read_file(self, repo: str, ref: str | None, path: str, *, start: int = 0, end: int | None = None) -> bytes:
        return self.files.read_file(repo, ref, path, start=start, end=end)

    def file_row(self, repo: str, ref: str | None, path: str) -> dict:
        return self.files.file_row(repo, ref, path)

    def file_pieces(self, repo: str, ref: str | None, path: str):
        return self.files.file_pieces(repo, ref, path)

    def files_under(self, repo: str, ref: str | None, path: str):
        return self.files.files_under(repo, ref, path)

    def write_file_to(self, row: dict, fd: int) -> None:
        self.files.write_file_to(row, fd)

    def export_file(self, row: dict, dest: str) -> str:
        return self.files.export_file(row, dest)

    def export_dir(self, repo: str, ref: str | None, path: str, dest: str) -> int:
        return self.files.export_dir(repo, ref, path, dest)

    def copy_file(self, src_repo: str, src_ref: str | None, src_path: str, dst_repo: str, dst_branch: str,
                  dst_path: str | None = None, description: str = "") -> Commit:
        return self.files.copy_file(src_repo, src_ref, src_path, dst_repo, dst_branch, dst_path, description)

    def inspect_file(self, repo: str, ref: str | None, path: str) -> dict:
        return self.files.inspect_file(repo, ref, path)


    @cached_property
    def cron(self) -> "Cron":
        from .cron import Cron

        return Cron(self.db, self.files, self.jobs)

    def cron_inputs(self, pipeline: str | None = None) -> list["CronInput"]:
        return self.cron.cron_inputs(pipeline)

    def last_tick(self, ci: "CronInput") -> float:
        return self.cron.last_tick(ci)

    def next_tick(self, ci: "CronInput") -> float:
        return self.cron.next_tick(ci)

    def tick_due(self, now: float | None = None) -> list[tuple["CronInput", Commit]]:
        return self.cron.tick_due(now)

    def run_cron(self, pipeline: str) -> list[tuple["CronInput", Commit]]:
        return self.cron.run_cron(pipeline)

    def watch(self, *, executor: str | None = None, progress=None, on_tick=None, on_job=None, stop=None, poll: float = 2.0) -> None:
        self.cron.watch(executor=executor, progress=progress, on_tick=on_tick, on_job=on_job, stop=stop, poll=poll)

    @cached_property
    def secrets(self) -> "Secrets":
        from .secrets import Secrets

        return Secrets(self.db, self.root)

    def create_secret(self, name: str, data: dict[str, str], *, overwrite: bool = False) -> dict:
        return self.secrets.create_secret(name, data, overwrite=overwrite)

    def list_secrets(self) -> list[dict]:
        return self.secrets.list_secrets()

    def inspect_secret(self, name: str) -> dict:
        return self.secrets.inspect_secret(name)

    def delete_secret(self, name: str) -> None:
        return self.secrets.delete_secret(name)

    def secret_values(self) -> list[str]:
        return self.secrets.secret_values()

    def resolve_secrets(self, spec) -> tuple[dict[str, str], dict[str, bytes]]:
        return self.secrets.resolve_secrets(spec)

    # ================================================ waves, jobs, provenance

    @cached_property
    def waves(self) -> "Waves":
        from .waves import Waves

        return Waves(self.db)

    @cached_property
    def jobs(self) -> "Jobs":
        from .jobs import Jobs

        return Jobs(self.db, self.chunks, self.root, self.config, self.repos, self.commits, self.files, self.secrets, self.waves)

    def trigger_pipeline(self, name: str, reason: str = "create") -> str:
        """Start a wave at pipeline `name` (and everything downstream of it)."""
        return self.waves.trigger(name, reason)

    def run_jobs(self, wave: str | None = None, *, pipeline: str | None = None, executor: str | None = None, progress=None,
                 wait: bool = True) -> list[dict]:
        from ..storage.metadata import jobs as job_rows  # here: a listing never needs the job rows

        if wave is not None and "jobs" not in self.__dict__ and not job_rows.any_unfinished(self.db, wave):
            # The usual put-file: no pipeline reads the branch, so its wave
            # has no job; answered without importing the job machinery (~25 ms).
            return []
        return self.jobs.run_jobs(wave, pipeline=pipeline, executor=executor, progress=progress, wait=wait)

    def inspect_job(self, pipeline: str | None, job: str) -> dict:
        return self.jobs.inspect_job(pipeline, job)

    def list_jobs(self, pipeline: str | None = None, wave: str | None = None, limit: int | None = None) -> list[dict]:
        from ..storage.metadata import jobs as job_rows  # (as in run_jobs)

        if pipeline is None and wave is not None and "jobs" not in self.__dict__ and not job_rows.listing(self.db, None, wave, 1):
            return []  # as in run_jobs: a wave without jobs needs no job machinery
        return self.jobs.list_jobs(pipeline, wave, limit)

    def list_datums(self, pipeline: str | None, job: str, *, limit: int | None = None, after: str | None = None,
                    failed_first: bool = False) -> list[dict]:
        return self.jobs.list_datums(pipeline, job, limit=limit, after=after, failed_first=failed_first)

    def inspect_datum(self, pipeline: str | None, job: str, datum: str) -> dict:
        return self.jobs.inspect_datum(pipeline, job, datum)

    def datum_logs(self, pipeline: str | None, job: str, datum: str | None = None) -> list[dict]:
        return self.jobs.datum_logs(pipeline, job, datum)

    @cached_property
    def jobcontrol(self) -> "JobControl":
        from .jobcontrol import JobControl

        return JobControl(self.db, self.jobs, self.history, self.waves)

    def wait_job(self, pipeline: str | None, job: str, *, timeout: float | None = None) -> dict:
        return self.jobcontrol.wait_job(pipeline, job, timeout=timeout)

    def stop_job(self, pipeline: str | None, job: str) -> dict:
        return self.jobcontrol.stop_job(pipeline, job)

    def delete_job(self, pipeline: str | None, job: str) -> dict:
        return self.jobcontrol.delete_job(pipeline, job)

    def restart_datum(self, pipeline: str | None, job: str, datum: str | None = None, *, all_failed: bool = False) -> str:
        return self.jobcontrol.restart_datum(pipeline, job, datum, all_failed=all_failed)

    def follow_logs(self, pipeline: str | None, job: str, datum: str | None = None):
        return self.jobcontrol.follow_logs(pipeline, job, datum)

    def latest_job(self, pipeline: str) -> str:
        return self.jobcontrol.latest_job(pipeline)

    @cached_property
    def provenance(self) -> "Provenance":
        from .provenance import Provenance

        return Provenance(self.db, self.chunks, self.repos, self.jobs)

    def commit_provenance(self, repo: str, commit_id: str) -> dict:
        return self.provenance.commit_provenance(repo, commit_id)

    def origin_commits(self, repo: str, commit_id: str) -> list[dict]:
        return self.provenance.origin_commits(repo, commit_id)

    def file_provenance(self, repo: str, ref: str | None, path: str) -> dict:
        return self.provenance.file_provenance(repo, ref, path)

    def file_subvenance(self, repo: str, ref: str | None, path: str) -> dict:
        return self.provenance.file_subvenance(repo, ref, path)

    def why(self, pipeline: str, job: str) -> dict:
        return self.provenance.why(pipeline, job)

    def dag(self) -> dict:
        return self.provenance.dag()

    # ====================================== history, pipelines, maintenance

    @cached_property
    def history(self) -> "History":
        from .history import History

        return History(self.db, self.repos)

    def delete_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        return self.history.delete_commit(repo, ref, force=force)

    def squash_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        return self.history.squash_commit(repo, ref, force=force)

    def downstream(self, commits):
        """Output commits derived from `commits` (transitively) and the jobs that read them."""
        return self.history.downstream(commits)

    @cached_property
    def pipelines(self) -> "Pipelines":
        from .pipelines import Pipelines

        return Pipelines(self.db, self.root, self.repos, self.history, self.waves, self.cron)

    def create_pipeline(self, text: str, *, source: str = "<spec>", update: bool = False, reprocess: bool = False) -> dict:
        return self.pipelines.create_pipeline(text, source=source, update=update, reprocess=reprocess)

    def update_pipeline(self, text: str, *, source: str = "<spec>", reprocess: bool = False) -> dict:
        return self.pipelines.update_pipeline(text, source=source, reprocess=reprocess)

    def pipeline_spec(self, name: str, version: int | None = None):
        return self.pipelines.pipeline_spec(name, version)

    def list_pipelines(self) -> list[dict]:
        return self.pipelines.list_pipelines()

    def inspect_pipeline(self, name: str, *, history: bool = False) -> dict:
        return self.pipelines.inspect_pipeline(name, history=history)

    def stop_pipeline(self, name: str) -> None:
        self.pipelines.stop_pipeline(name)

    def start_pipeline(self, name: str) -> None:
        self.pipelines.start_pipeline(name)

    def delete_pipeline(self, name: str, *, force: bool = False, keep_repo: bool = False) -> None:
        self.pipelines.delete_pipeline(name, force=force, keep_repo=keep_repo)

    def pipeline_wave(self, name: str) -> str | None:
        return self.pipelines.pipeline_wave(name)

    def validate_pipeline(self, text: str, *, source: str = "<spec>") -> list[dict]:
        return self.pipelines.validate_pipeline(text, source=source)

    def rerun_pipeline(self, name: str, *, reprocess: bool = False) -> str:
        return self.pipelines.rerun_pipeline(name, reprocess=reprocess)

    def edit_pipeline(self, name: str, text: str, *, reprocess: bool = False) -> dict:
        return self.pipelines.edit_pipeline(name, text, reprocess=reprocess)

    def pipelines_reading(self, repo: str) -> set[str]:
        return self.pipelines.pipelines_reading(repo)

    @cached_property
    def auth(self) -> "Auth":
        """Users, tokens, roles and the audit log (`dpl serve` checks every request with it)."""
        from .auth import Auth

        return Auth(self.db)

    @cached_property
    def maintenance(self) -> "Maintenance":
        from .maintenance import Maintenance

        return Maintenance(self.db, self.chunks, self.root, self.repos, self.files)

    def fsck(self, progress=None):
        return self.maintenance.fsck(progress)

    def repair(self, *, sources: list[str] = ()):
        return self.maintenance.repair(sources=sources)

    def gc(self, *, grace_minutes: float | None = None, dry_run: bool = False):
        return self.maintenance.gc(grace_minutes=grace_minutes, dry_run=dry_run)

    def live_objects(self) -> set[bytes]:
        return self.maintenance.live_objects()
