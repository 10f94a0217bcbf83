"""Pipelines: creating, versioning, stopping and deleting them.

A pipeline owns an output repo of its name.  Every create or update is a new
version: the normalised spec goes to the metadata database and to the spec
history (git), together with the code version of the work tree the spec file
came from.  Anything that needs the store to check (input repos exist, the
graph stays acyclic) is checked here, before anything is created.
"""

from __future__ import annotations

import json
import time
import uuid

from . import spec as specs
from . import code as code_mod
from .spechistory import SpecHistory, code_version
from ..storage.errors import RepoInUse
from .errors import InvalidSpec, PipelineExists, PipelineNotFound


class PipelineOps:
    """Mixed into `Store`."""

    @property
    def spec_history(self) -> SpecHistory:
        if "_spec_history" not in self.__dict__:
            self._spec_history = SpecHistory(self.root / "specs.git")
        return self._spec_history

    # ------------------------------------------------------------- lifecycle

    def create_pipeline(self, text: str, *, source: str = "<spec>", update: bool = False, reprocess: bool = False) -> dict:
        spec = specs.load_spec(text, source)
        name = spec.name
        existing = self.db.one("SELECT * FROM pipelines WHERE name=?", (name,))
        if existing and not update:
            raise PipelineExists(f"Pipeline {name!r} already exists.", hint="Use `dpl update-pipeline` to change it.")
        if update and not existing:
            raise PipelineNotFound(f"Pipeline {name!r} does not exist.", hint="Use `dpl create-pipeline` to create it.")
        self._check_inputs(spec)
        if not existing and self.db.one("SELECT 1 FROM repos WHERE name=?", (name,)):
            raise InvalidSpec(
                f"spec.pipeline.name: a repo called {name!r} already exists, and a pipeline's output repo takes its name.",
                hint="Rename the pipeline or delete that repo.",
            )
        # Versions keep counting across a delete and re-create: the old
        # versions stay, because commits kept with --keep-repo refer to them.
        last = self.db.one("SELECT MAX(version) AS v FROM pipeline_versions WHERE name=?", (name,))
        version = (last["v"] or 0) + 1
        spec_json = spec.to_json()
        code = code_version(source if source not in ("<spec>", "-") else None)
        code_mod.check_patterns(spec, code.get("dir"))
        history_commit = self.spec_history.record(name, spec_json, f"{'update' if existing else 'create'} pipeline {name} (version {version})")
        prev_reprocess = self.db.one("SELECT MAX(reprocess) AS r FROM pipeline_versions WHERE name=?", (name,))
        reprocess_count = (prev_reprocess["r"] or 0) + (1 if reprocess else 0) if prev_reprocess else 0
        now = time.time()
        with self.db.write() as db:
            if existing:
                db.execute(
                    "UPDATE pipelines SET version=?, spec=?, spec_hash=?, transform_hash=?, output_branch=?, updated=? WHERE name=?",
                    (version, spec_json, spec.spec_hash(), spec.transform_hash(), spec.output_branch, now, name),
                )
            else:
                db.execute(
                    "INSERT INTO pipelines (name, version, spec, spec_hash, transform_hash, state, output_branch, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (name, version, spec_json, spec.spec_hash(), spec.transform_hash(), spec.output_branch, now, now),
                )
                db.execute("INSERT INTO repos (name, created, description, kind) VALUES (?, ?, ?, 'pipeline')",
                           (name, now, f"Output repo for pipeline {name}."))
            db.execute(
                "INSERT INTO pipeline_versions (name, version, spec, spec_hash, transform_hash, created, history_commit, code, reprocess) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, spec_json, spec.spec_hash(), spec.transform_hash(), now, history_commit, json.dumps(code), reprocess_count),
            )
            for ci in spec.cron_inputs():
                db.execute("INSERT OR IGNORE INTO repos (name, created, description, kind) VALUES (?, ?, ?, 'user')",
                           (ci.repo, now, f"Ticks of pipeline {name}'s cron input {ci.name!r} ({ci.schedule})."))
            db.execute("DELETE FROM pipeline_inputs WHERE pipeline=?", (name,))
            db.executemany(
                "INSERT OR IGNORE INTO pipeline_inputs (pipeline, repo, branch) VALUES (?, ?, ?)",
                [(name, repo, branch) for repo, branch in spec.input_repos()],
            )
            # The first job is created with the pipeline, atomically: a crash
            # cannot leave a pipeline that never processes its current input.
            self._start_wave(db, uuid.uuid4().hex, [], roots=[name], reason="reprocess" if reprocess else "update" if existing else "create")
        return self.inspect_pipeline(name)

    def update_pipeline(self, text: str, *, source: str = "<spec>", reprocess: bool = False) -> dict:
        return self.create_pipeline(text, source=source, update=True, reprocess=reprocess)

    def _check_inputs(self, spec) -> None:
        made_here = {ci.repo for ci in spec.cron_inputs()}  # cron repos come with the pipeline
        for i, (repo, _branch) in enumerate(spec.input_repos()):
            if repo not in made_here and self.db.one("SELECT 1 FROM repos WHERE name=?", (repo,)) is None:
                raise InvalidSpec(
                    f"spec.input: input repo {repo!r} does not exist.",
                    hint=f"Create it with `dpl create-repo {repo}` or fix the repo name.",
                )
        edges: dict[str, set[str]] = {}
        for row in self.db.query("SELECT pipeline, repo FROM pipeline_inputs"):
            edges.setdefault(row["pipeline"], set()).add(row["repo"])
        edges[spec.name] = {repo for repo, _ in spec.input_repos()}
        cycle = specs.find_cycle(edges)
        if cycle:
            raise InvalidSpec(
                f"spec.input: pipeline {spec.name!r} would make a cycle: {' -> '.join(cycle)}.",
                hint="A pipeline may not read, directly or through others, its own output.",
            )

    def _pipeline_row(self, name: str):
        row = self.db.one("SELECT * FROM pipelines WHERE name=?", (name,))
        if row is None:
            raise PipelineNotFound(f"Pipeline {name!r} does not exist.", hint="See `dpl list-pipeline`.")
        return row

    def pipeline_spec(self, name: str, version: int | None = None):
        if version is None:
            version = self._pipeline_row(name)["version"]
        row = self.db.one("SELECT spec FROM pipeline_versions WHERE name=? AND version=?", (name, version))
        return specs.Spec(json.loads(row["spec"]))  # validated when it was created

    def list_pipelines(self) -> list[dict]:
        return [self.inspect_pipeline(r["name"]) for r in self.db.query("SELECT name FROM pipelines ORDER BY name")]

    def inspect_pipeline(self, name: str, *, history: bool = False) -> dict:
        row = self._pipeline_row(name)
        spec = json.loads(row["spec"])
        last = self.db.one("SELECT id, state, finished FROM jobs WHERE pipeline=? ORDER BY created DESC LIMIT 1", (name,))
        info = {
            "name": name,
            "version": row["version"],
            "state": row["state"],
            "description": spec.get("description", ""),
            "inputs": [f"{r['repo']}@{r['branch']}" for r in self.db.query("SELECT repo, branch FROM pipeline_inputs WHERE pipeline=?", (name,))],
            "created": row["created"],
            "updated": row["updated"],
            "spec_hash": row["spec_hash"],
            "transform_hash": row["transform_hash"],
            "last_job": last["id"] if last else None,
            "last_job_state": last["state"] if last else None,
            "cron": [{"name": ci.name, "repo": ci.repo, "spec": ci.schedule, "overwrite": ci.overwrite,
                      "next_tick": self.next_tick(ci)} for ci in self.cron_inputs(name)],
            "spec": spec,
        }
        if history:
            versions = self.db.query("SELECT * FROM pipeline_versions WHERE name=? ORDER BY version", (name,))
            out, prev = [], None
            for v in versions:
                out.append(
                    {
                        "version": v["version"],
                        "created": v["created"],
                        "spec_hash": v["spec_hash"],
                        "transform_changed": prev is not None and prev["transform_hash"] != v["transform_hash"],
                        "reprocess": prev is not None and prev["reprocess"] != v["reprocess"],
                        "code": json.loads(v["code"]),
                        "diff": self.spec_history.diff(name, prev["history_commit"] if prev else None, v["history_commit"]),
                    }
                )
                prev = v
            info["history"] = out
        return info

    def stop_pipeline(self, name: str) -> None:
        self._pipeline_row(name)
        with self.db.write() as db:
            db.execute("UPDATE pipelines SET state='stopped' WHERE name=?", (name,))

    def start_pipeline(self, name: str) -> None:
        self._pipeline_row(name)
        with self.db.write() as db:
            db.execute("UPDATE pipelines SET state='running' WHERE name=?", (name,))
            self._start_wave(db, uuid.uuid4().hex, [], roots=[name], reason="start")

    def delete_pipeline(self, name: str, *, force: bool = False, keep_repo: bool = False) -> None:
        self._pipeline_row(name)
        readers = self.pipelines_reading(name)
        if readers and not force:
            raise RepoInUse(
                f"Pipeline {name!r} feeds pipeline(s) {', '.join(sorted(readers))}.",
                hint="Delete those first, or pass --force.",
            )
        if not keep_repo and not force:
            # Pipelines that read its output before (and no longer do) made commits from it.
            down, _ = self.downstream({(name, r["id"]) for r in self.db.query("SELECT id FROM commits WHERE repo=?", (name,))})
            if down:
                from .history import _names
                from ..storage.errors import WouldOrphan

                raise WouldOrphan(
                    f"Deleting pipeline {name!r} and its output repo would orphan {len(down)} downstream commit(s) made from it: {_names(down)}.",
                    hint="Pass --keep-repo to keep its output, or --force to delete those commits too.",
                )
        with self.db.write() as db:
            for table in ("pipeline_inputs", "datum_outputs", "datums", "lineage"):
                db.execute(f"DELETE FROM {table} WHERE pipeline=?", (name,))
            db.execute("DELETE FROM jobs WHERE pipeline=?", (name,))
            db.execute("DELETE FROM pipelines WHERE name=?", (name,))
            if keep_repo:
                # The repo stays as a plain repo: its commits no longer name jobs that are gone.
                db.execute("UPDATE commits SET origin='user', job=NULL WHERE repo=?", (name,))
                db.execute("UPDATE repos SET kind='user' WHERE name=?", (name,))
        self.spec_history.remove(name)
        if not keep_repo:
            self.delete_repo(name, force=True)

    def pipeline_wave(self, name: str) -> str | None:
        """The global id of the pipeline's newest job."""
        self._pipeline_row(name)
        row = self.db.one("SELECT id FROM jobs WHERE pipeline=? ORDER BY created DESC LIMIT 1", (name,))
        return row["id"] if row else None

    def pipelines_reading(self, repo: str) -> set[str]:
        return {r["pipeline"] for r in self.db.query("SELECT pipeline FROM pipeline_inputs WHERE repo=?", (repo,))}

