"""A plan as a Kubeflow Pipelines v2 pipeline, compiled by the kfp compiler.

Each step is a container component running the step's `dpl worker` command
in the plan's image; the tasks follow the plan's edges (`.after`).  The
store's credentials and the secrets a spec names are Kubernetes secret
references written by kfp-kubernetes into the pipeline's platform spec,
each optional.  KFP's cache is turned off for every task: a step has no
inputs KFP can see, so a cached task would never run again, while dpl's own
datum hashes already skip what was done.  kfp is imported here only, so only
`dpl export kfp` needs it.
"""

from __future__ import annotations

import os
import tempfile

from .errors import missing
from .plan import SECRETS_DIR, STORE_SECRET_KEYS, Plan, Step


def pipeline_yaml(plan: Plan) -> str:
    try:
        from kfp import compiler, dsl
    except ImportError:
        raise missing("Kubeflow Pipelines", "kfp") from None
    try:
        from kfp import kubernetes
    except ImportError:
        raise missing("Kubeflow Pipelines", "kfp-kubernetes") from None

    components = {s.name: _component(dsl, plan.image, s) for s in plan.steps}

    @dsl.pipeline(name=plan.name, description=f"dpl pipelines {', '.join(s.pipeline for s in plan.steps)} "
                                              f"over {plan.object_store} and {plan.metadata}")
    def pipeline():
        tasks = {}
        for s in plan.steps:
            task = components[s.name]()
            task.set_display_name(s.pipeline)
            task.set_caching_options(False)
            for k, v in sorted(plan.env.items()):
                task.set_env_variable(k, v)
            kubernetes.use_secret_as_env(task, secret_name=plan.store_secret, secret_key_to_env={k: k for k in STORE_SECRET_KEYS}, optional=True)
            for secret in s.secrets:
                kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=f"{SECRETS_DIR}/{secret}", optional=True)
            _resources(task, s)
            for up in s.depends:
                task.after(tasks[up])
            tasks[s.name] = task

    fd, path = tempfile.mkstemp(suffix=".yaml")
    os.close(fd)
    try:
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=path)
        with open(path, encoding="utf-8") as f:
            return f.read()
    finally:
        os.unlink(path)


def _component(dsl, image: str, step: Step):
    """A container component named after the step (kfp names a component by its function)."""
    command = list(step.command)

    def component():
        return dsl.ContainerSpec(image=image, command=command)

    component.__name__ = component.__qualname__ = step.name.replace("-", "_")
    return dsl.container_component(component)


def _resources(task, step: Step) -> None:
    req, lim = step.requests, step.limits
    if "cpu" in req:
        task.set_cpu_request(req["cpu"])
    if "memory" in req:
        task.set_memory_request(req["memory"])
    if "cpu" in lim:
        task.set_cpu_limit(lim["cpu"])
    if "memory" in lim:
        task.set_memory_limit(lim["memory"])
    gpu = lim if "gpu" in lim else req if "gpu" in req else None
    if gpu:
        task.set_accelerator_type(gpu["gpu_type"])
        task.set_accelerator_limit(gpu["gpu"])
