"""`dpl export argo|kfp`: pipelines as a workflow for a cluster; `dpl worker`: what each of its steps runs.

The plan, the formats and the worker are engine/export/; these commands
parse, call one of them and write the file or the job lines.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from . import render
from ..storage.errors import DplError

export_app = typer.Typer(name="export", no_args_is_help=True,
                         help="Write pipelines as an Argo Workflow or a Kubeflow pipeline whose steps run `dpl worker` against the store's S3 and PostgreSQL.")

PipelinesArg = typer.Argument(None, metavar="[PIPELINE...]", help="The pipelines to export (default: all).")
FileOpt = typer.Option("-", "--output", "-o", metavar="FILE", help="Where to write the YAML (default: stdout).")
ImageOpt = typer.Option(None, "--image", help="The image each step runs: dpl installed, with what the steps' commands need (default: dpl:VERSION).")
ObjectStoreOpt = typer.Option(None, "--object-store", metavar="s3://BUCKET/PREFIX", help="The chunk store the steps use (default: this store's).")
MetadataOpt = typer.Option(None, "--metadata", metavar="postgresql://...", help="The metadata database the steps use (default: this store's; a password in it goes to the store secret, not the YAML).")
ExecutorOpt = typer.Option("local", "--executor", "-x", help="Where each step runs its datums: local (in the step's pod) or ray (a Ray cluster the pod reaches).")
StoreSecretOpt = typer.Option("dpl-store", "--store-secret", metavar="NAME", help="The Kubernetes secret holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and PGPASSWORD for the steps.")
NameOpt = typer.Option("dpl", "--name", help="The workflow's (pipeline's) name.")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    app.command("worker")(worker)


def _export(fmt: str, pipelines, output, image, object_store, metadata, executor, store_secret, name) -> None:
    from . import version
    from ..engine.export import plan as plans

    plan = plans.build(_embedded_store(), pipelines, image=image or f"dpl:{version()}", object_store=object_store,
                       metadata=metadata, executor=executor, store_secret=store_secret, name=name)
    if fmt == "argo":
        from ..engine.export.argo import workflow_yaml as write
    else:
        from ..engine.export.kfp import pipeline_yaml as write
    text = write(plan)
    for note in plan.notes:
        render.info(f"note: {note}")
    if output == "-":
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    edges = sum(len(s.depends) for s in plan.steps)
    render.info(f"wrote {output}: {render.count(plan.steps, 'step')} ({', '.join(s.pipeline for s in plan.steps)}), "
                f"{render.count(range(edges), 'edge')}, image {plan.image}")


def _embedded_store():
    """The store here: an export reads specs and the store's URLs, which a server does not hand out."""
    from .main import store
    from ..engine import Store

    s = store()
    if not isinstance(s, Store):
        raise DplError("dpl export reads the specs and URLs of the store on this machine, not a server's.",
                       hint="Run it with --address local where a store names the same S3 bucket and PostgreSQL database.")
    return s


@export_app.command("argo")
def argo(pipelines: Optional[List[str]] = PipelinesArg, output: str = FileOpt, image: Optional[str] = ImageOpt,
         object_store: Optional[str] = ObjectStoreOpt, metadata: Optional[str] = MetadataOpt, executor: str = ExecutorOpt,
         store_secret: str = StoreSecretOpt, name: str = NameOpt):
    """An Argo Workflow (built with hera): a DAG task per pipeline, edges where one reads another's output."""
    _export("argo", pipelines, output, image, object_store, metadata, executor, store_secret, name)


@export_app.command("kfp")
def kfp(pipelines: Optional[List[str]] = PipelinesArg, output: str = FileOpt, image: Optional[str] = ImageOpt,
        object_store: Optional[str] = ObjectStoreOpt, metadata: Optional[str] = MetadataOpt, executor: str = ExecutorOpt,
        store_secret: str = StoreSecretOpt, name: str = NameOpt):
    """A Kubeflow Pipelines v2 pipeline (compiled by kfp): a task per pipeline, edges where one reads another's output."""
    _export("kfp", pipelines, output, image, object_store, metadata, executor, store_secret, name)


def worker(
    pipeline: str = typer.Argument(..., metavar="PIPELINE"),
    object_store: Optional[str] = typer.Option(None, "--object-store", metavar="s3://BUCKET/PREFIX", help="Open the shared store by its URLs (with --metadata), as on a fresh machine."),
    metadata: Optional[str] = typer.Option(None, "--metadata", metavar="postgresql://...", help="The shared metadata database (password from PGPASSWORD)."),
    executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run datums on this executor: local, docker or ray."),
    secrets_dir: Optional[str] = typer.Option(None, "--secrets-dir", metavar="DIR", help="Take the secrets mounted here (DIR/NAME/KEY files) into the store's first."),
):
    """Run the pending jobs of one pipeline that may run now (what an exported step runs), then exit; 1 if one failed."""
    from .jobreport import JobProgress, job_summary, stoppable
    from ..engine.export import worker as w

    s = w.open_store(object_store, metadata)
    if secrets_dir:
        for name in w.load_secrets(s, secrets_dir):
            render.info(f"took secret {name} from {secrets_dir}")
    with stoppable(), JobProgress() as progress:
        ran = w.run_pipeline_jobs(s, pipeline, executor=executor, progress=progress)
    for job in ran:
        render.info(job_summary(job))
    left = w.waiting(s, pipeline)
    if left:
        render.info(f"{render.count(left, 'job')} of {pipeline} left for a later run (waiting for upstream jobs or held by another runner)")
    elif not ran:
        render.info(f"no pending jobs of {pipeline}")
    bad = [j for j in ran if j["state"] != "success"]
    if bad:
        ref = f"{bad[0]['pipeline']}@{bad[0]['id'][:12]}"
        raise DplError(bad[0]["error"] or f"Job {ref} failed.", hint=f"See `dpl inspect-job {ref}` and `dpl logs --job {ref}`.")
