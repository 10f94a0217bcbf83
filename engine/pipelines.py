"""Pipelines: creating, versioning, stopping and deleting them (the `Pipelines` component).

A pipeline owns an output repo of its name.  Every create or update is a new
version: the normalised spec goes to the metadata database and to the spec
history (git), together with the code version of the work tree the spec file
came from.  Anything that needs the store to check (input repos exist, the
graph stays acyclic) is checked here, before anything is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from . import spec as specs
from . import code as code_mod
from .spechistory import SpecHistory, code_version
from ..storage.errors import RepoInUse
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows
from ..storage.metadata import jobs as job_rows
from ..storage.metadata import pipelines as pipeline_rows
from ..storage.metadata import repos as repo_rows
from ..storage.metadata import transactions as txn_rows
from ..storage.metadata.db import Database, Tx
from .errors import InvalidSpec, PipelineExists, PipelineNotFound
from .history import History, names
from .repos import Repos

if TYPE_CHECKING:
    from .cron import Cron
    from .waves import Waves


class Pipelines:
    """Pipelines and their versions; each create, update or start begins a wave."""

    def __init__(self, db: Database, root: Path, repos: Repos, history: History, waves: "Waves", cron: "Cron"):
        self.db, self.root, self.repos, self.history, self.waves, self.cron = db, root, repos, history, waves, cron

    @cached_property
    def spec_history(self) -> SpecHistory:
        """Every spec version as a git commit; opened on first use (pygit2 is slow to import)."""
        return SpecHistory(self.root / "specs.git")

    # ------------------------------------------------------------- lifecycle

    def create_pipeline(self, text: str, *, source: str = "<spec>", update: bool = False, reprocess: bool = False,
                        tx: Tx | None = None, wave: str | None = None, code_dir: str | None = None) -> dict:
        """Create (or update) a pipeline and start its first job; given `tx` (a dpl transaction
        landing), in that transaction, its job in the wave `wave`."""
        spec = specs.load_spec(text, source)
        name = spec.name
        txn = txn_rows.open_one(self.db) if tx is None else None
        if txn is not None:
            # A dpl transaction is open: checked now, applied when it finishes (engine/transactions.py).
            self._check_inputs(spec)
            with self.db.write() as wtx:
                txn_rows.add_op(wtx, txn.id, "update-pipeline" if update else "create-pipeline",
                                {"name": name, "text": text, "source": source, "reprocess": reprocess})
            return {"name": name, "version": None, "transaction": txn.id, "warnings": []}
        existing = pipeline_rows.exists(self.db, name)
        if existing and not update:
            raise PipelineExists(f"Pipeline {name!r} already exists.", hint="Use `dpl update-pipeline` to change it.")
        if update and not existing:
            raise PipelineNotFound(f"Pipeline {name!r} does not exist.", hint="Use `dpl create-pipeline` to create it.")
        warnings = self._check_inputs(spec)
        if not existing and repo_rows.exists(self.db, name):
            raise InvalidSpec(
                f"spec.pipeline.name: a repo called {name!r} already exists, and a pipeline's output repo takes its name.",
                hint="Rename the pipeline or delete that repo.",
            )
        # Versions keep counting across a delete and re-create: the old
        # versions stay, because commits kept with --keep-repo refer to them.
        version = pipeline_rows.last_version(self.db, name) + 1
        spec_json = spec.to_json()
        # The step's code lives beside the spec file; a spec edited or rerun in place keeps its version's directory.
        code = code_version(os.path.join(code_dir, "spec") if code_dir else source if source not in ("<spec>", "-") else None)
        code_mod.check_patterns(spec, code.get("dir"))
        history_commit = self.spec_history.record(name, spec_json, f"{'update' if existing else 'create'} pipeline {name} (version {version})")
        reprocess_count = pipeline_rows.last_reprocess(self.db, name) + (1 if reprocess else 0)
        spec_hash, transform_hash = spec.spec_hash(), spec.transform_hash()
        now = time.time()
        outer = tx
        with (contextlib.nullcontext(outer) if outer is not None else self.db.write()) as tx:
            if existing:
                pipeline_rows.set_version(tx, name, version, spec_json, spec_hash, transform_hash, spec.output_branch, now)
            else:
                pipeline_rows.insert(tx, name, version, spec_json, spec_hash, transform_hash, spec.output_branch, now)
                repo_rows.insert(tx, name, now, f"Output repo for pipeline {name}.", "pipeline")
            pipeline_rows.insert_version(tx, name, version, spec_json, spec_hash, transform_hash, now, history_commit, code, reprocess_count)
            for ci in spec.cron_inputs():
                repo_rows.insert(tx, ci.repo, now, f"Ticks of pipeline {name}'s cron input {ci.name!r} ({ci.schedule}).", "user", if_missing=True)
            pipeline_rows.set_inputs(tx, name, spec.input_repos())
            # The first job is created with the pipeline, atomically: a crash
            # cannot leave a pipeline that never processes its current input.
            self.waves.start(tx, wave or uuid.uuid4().hex, [], roots=[name], reason="reprocess" if reprocess else "update" if existing else "create")
        if outer is not None:
            return {"name": name, "version": version, "warnings": warnings}
        return {**self.inspect_pipeline(name), "warnings": warnings}

    def update_pipeline(self, text: str, *, source: str = "<spec>", reprocess: bool = False) -> dict:
        return self.create_pipeline(text, source=source, update=True, reprocess=reprocess)

    def _check_inputs(self, spec) -> list[str]:
        """Refuse inputs that cannot be; return warnings about ones that look wrong.

        A pfs input on a branch that does not exist yet is allowed, as in
        Pachyderm (the first commit there starts a job), but it is most
        often a typo that would leave the pipeline waiting forever: say so.
        """
        made_here = {ci.repo for ci in spec.cron_inputs()}  # cron repos come with the pipeline
        warnings = []
        for repo, branch in spec.input_repos():
            if repo in made_here:
                continue
            if not repo_rows.exists(self.db, repo):
                raise InvalidSpec(
                    f"spec.input: input repo {repo!r} does not exist.",
                    hint=f"Create it with `dpl create-repo {repo}` or fix the repo name.",
                )
            upstream = pipeline_rows.get(self.db, repo)
            made_by_job = upstream is not None and upstream.output_branch == branch  # its first job makes it
            if made_by_job or repo_rows.branch(self.db, repo, branch) is not None:
                continue
            existing = [b.name for b in repo_rows.branches(self.db, repo)]
            if existing or branch != "master":  # a new repo's master is made by its first put: no news
                warnings.append(
                    f"input repo {repo!r} has no branch {branch!r} yet"
                    + (f" (it has {', '.join(existing)})" if existing else "")
                    + f": pipeline {spec.name!r} runs when a commit lands there."
                )
        edges: dict[str, set[str]] = {}
        for edge in pipeline_rows.all_inputs(self.db):
            edges.setdefault(edge.pipeline, set()).add(edge.repo)
        edges[spec.name] = {repo for repo, _ in spec.input_repos()}
        cycle = specs.find_cycle(edges)
        if cycle:
            raise InvalidSpec(
                f"spec.input: pipeline {spec.name!r} would make a cycle: {' -> '.join(cycle)}.",
                hint="A pipeline may not read, directly or through others, its own output.",
            )
        return warnings

    def pipeline(self, name: str) -> pipeline_rows.Pipeline:
        row = pipeline_rows.get(self.db, name)
        if row is None:
            raise PipelineNotFound(f"Pipeline {name!r} does not exist.", hint="See `dpl list-pipeline`.")
        return row

    def pipeline_spec(self, name: str, version: int | None = None):
        if version is None:
            version = self.pipeline(name).version
        return specs.Spec(pipeline_rows.version(self.db, name, version).spec)  # validated when it was created

    def list_pipelines(self) -> list[dict]:
        return [self.inspect_pipeline(name) for name in pipeline_rows.names(self.db)]

    def inspect_pipeline(self, name: str, *, history: bool = False) -> dict:
        row = self.pipeline(name)
        last = job_rows.latest(self.db, name)
        info = {
            "name": name,
            "version": row.version,
            "state": row.state,
            "description": row.spec.get("description", ""),
            "inputs": [f"{i.repo}@{i.branch}" for i in pipeline_rows.inputs(self.db, name)],
            "created": row.created,
            "updated": row.updated,
            "spec_hash": row.spec_hash,
            "transform_hash": row.transform_hash,
            "last_job": last.id if last else None,
            "last_job_state": last.state if last else None,
            "cron": [{"name": ci.name, "repo": ci.repo, "spec": ci.schedule, "overwrite": ci.overwrite,
                      "next_tick": self.cron.next_tick(ci)} for ci in self.cron.cron_inputs(name)],
            "spec": row.spec,
        }
        if history:
            out, prev = [], None
            for v in pipeline_rows.versions(self.db, name):
                out.append(
                    {
                        "version": v.version,
                        "created": v.created,
                        "spec_hash": v.spec_hash,
                        "transform_changed": prev is not None and prev.transform_hash != v.transform_hash,
                        "reprocess": prev is not None and prev.reprocess != v.reprocess,
                        "code": v.code,
                        "diff": self.spec_history.diff(name, prev.spec if prev else None, v.spec),
                    }
                )
                prev = v
            info["history"] = out
        return info

    def stop_pipeline(self, name: str) -> None:
        self.pipeline(name)
        with self.db.write() as tx:
            pipeline_rows.set_state(tx, name, "stopped")

    def start_pipeline(self, name: str) -> None:
        self.pipeline(name)
        with self.db.write() as tx:
            pipeline_rows.set_state(tx, name, "running")
            self.waves.start(tx, uuid.uuid4().hex, [], roots=[name], reason="start")

    def delete_pipeline(self, name: str, *, force: bool = False, keep_repo: bool = False) -> None:
        self.pipeline(name)
        readers = self.pipelines_reading(name)
        if readers and not force:
            raise RepoInUse(
                f"Pipeline {name!r} feeds pipeline(s) {', '.join(sorted(readers))}.",
                hint="Delete those first, or pass --force.",
            )
        if not keep_repo and not force:
            # Pipelines that read its output before (and no longer do) made commits from it.
            down, _ = self.history.downstream({(name, cid) for cid in commit_rows.ids_of_repo(self.db, name)})
            if down:
                from ..storage.errors import WouldOrphan

                raise WouldOrphan(
                    f"Deleting pipeline {name!r} and its output repo would orphan {len(down)} downstream commit(s) made from it: {names(down)}.",
                    hint="Pass --keep-repo to keep its output, or --force to delete those commits too.",
                )
        with self.db.write() as tx:
            datum_rows.delete_of_pipeline(tx, name)
            job_rows.delete_of_pipeline(tx, name)
            pipeline_rows.delete(tx, name)
            if keep_repo:
                # The repo stays as a plain repo: its commits no longer name jobs that are gone.
                commit_rows.disown(tx, name)
                repo_rows.set_kind(tx, name, "user")
        self.spec_history.remove(name)
        if not keep_repo:
            self.history.delete_repo(name, force=True)

    def validate_pipeline(self, text: str, *, source: str = "<spec>") -> list[dict]:
        """Check every spec of a spec file as create-pipeline would, changing nothing: each
        spec's name, whether it would create or update, and warnings about its inputs."""
        out = []
        for spec in specs.load_specs(text, source):
            warnings = self._check_inputs(spec)
            exists = pipeline_rows.exists(self.db, spec.name)
            if not exists and repo_rows.exists(self.db, spec.name):
                raise InvalidSpec(f"spec.pipeline.name: a repo called {spec.name!r} already exists, and a pipeline's output repo takes its name.",
                                  hint="Rename the pipeline or delete that repo.")
            out.append({"name": spec.name, "action": "update" if exists else "create", "spec_hash": spec.spec_hash(), "warnings": warnings})
        return out

    def rerun_pipeline(self, name: str, *, reprocess: bool = False) -> str:
        """A new job of the pipeline over its current inputs (returned: its id).  Datums done before
        are skipped, unless `reprocess`: then a new version of the same spec runs every datum again."""
        row = self.pipeline(name)
        if reprocess:
            self.create_pipeline(json.dumps(row.spec), update=True, reprocess=True, code_dir=self._code_dir(row))
            return self.pipeline_wave(name)
        return self.waves.trigger(name, "rerun")

    def edit_pipeline(self, name: str, text: str, *, reprocess: bool = False) -> dict:
        """Update pipeline `name` to the edited spec `text` (`dpl edit-pipeline`), keeping its code directory."""
        row = self.pipeline(name)
        edited = specs.load_specs(text, f"edited spec of {name}")
        if [s.name for s in edited] != [name]:
            raise InvalidSpec(f"The edited spec must stay one spec of pipeline {name!r}; the pipeline was not changed.",
                              hint="Rename a pipeline with create-pipeline and delete-pipeline instead.")
        return self.create_pipeline(text, source=f"edited spec of {name}", update=True, reprocess=reprocess, code_dir=self._code_dir(row))

    def _code_dir(self, row: pipeline_rows.Pipeline) -> str | None:
        return pipeline_rows.version(self.db, row.name, row.version).code.get("dir")

    def pipeline_wave(self, name: str) -> str | None:
        """The global id of the pipeline's newest job."""
        self.pipeline(name)
        last = job_rows.latest(self.db, name)
        return last.id if last else None

    def pipelines_reading(self, repo: str) -> set[str]:
        return pipeline_rows.readers_of(self.db, repo)

