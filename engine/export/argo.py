"""A plan as an Argo Workflow, built with hera: a DAG with one container template per step.

Each template runs the step's `dpl worker` command in the plan's image, with
the S3 settings as plain env, the store's credentials as secretKeyRefs (each
optional) and every secret its spec names mounted as a secret volume under
SECRETS_DIR; the DAG's dependencies are the plan's edges.  hera is imported
here only, so only `dpl export argo` needs it.
"""

from __future__ import annotations

from .errors import missing
from .plan import SECRETS_DIR, STORE_SECRET_KEYS, Plan, Step


def workflow_yaml(plan: Plan) -> str:
    try:
        from hera.workflows import DAG, Container, Env, SecretEnv, SecretVolume, Task, Workflow
    except ImportError:
        raise missing("Argo", "hera") from None

    def template(step: Step) -> Container:
        env = [Env(name=k, value=v) for k, v in sorted(plan.env.items())]
        env += [SecretEnv(name=k, secret_name=plan.store_secret, secret_key=k, optional=True) for k in STORE_SECRET_KEYS]
        volumes = [SecretVolume(name=f"secret-{i}", secret_name=s, mount_path=f"{SECRETS_DIR}/{s}", optional=True)
                   for i, s in enumerate(step.secrets)]
        return Container(
            name=step.name,
            image=plan.image,
            command=list(step.command),
            env=env,
            volumes=volumes or None,
            resources=_resources(step),
            annotations={"dpl/pipeline": step.pipeline},
        )

    with Workflow(generate_name=f"{plan.name}-", entrypoint=plan.name,
                  annotations={"dpl/object-store": plan.object_store, "dpl/metadata": plan.metadata}) as w:
        templates = {s.name: template(s) for s in plan.steps}
        with DAG(name=plan.name):
            for s in plan.steps:
                Task(name=s.name, template=templates[s.name], dependencies=list(s.depends) or None)
    return w.to_yaml()


def _resources(step: Step):
    """The spec's requests and limits as Kubernetes quantities, verbatim: a Pachyderm spec
    writes them as Kubernetes does ("1G", "500m"), which hera's own `Resources` would refuse
    for decimal units, so the model is used directly."""
    from hera.workflows.models import Quantity, ResourceRequirements

    def quantities(found: dict, gpu: dict | None) -> dict | None:
        out = {k: Quantity(found[k]) for k in ("cpu", "memory") if k in found}
        if gpu:  # Kubernetes takes GPUs as limits only
            out[gpu["gpu_type"]] = Quantity(str(gpu["gpu"]))
        return out or None

    if not step.requests and not step.limits:
        return None
    gpu = step.limits if "gpu" in step.limits else step.requests if "gpu" in step.requests else None
    return ResourceRequirements(requests=quantities(step.requests, None), limits=quantities(step.limits, gpu))
