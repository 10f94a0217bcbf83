"""Executors: where a datum's step runs (local sandbox, Docker, Ray).

One module per implementation behind the `Executor` Protocol in `base`; what
every executor shares (env, timeouts, exit codes, logs, `/pfs` paths) is the
step runner in `runner`.  `REGISTRY` names each backend as "module:Class",
as fsspec's registry does, so that choosing one imports it (and docker-py or
Ray) only then, and a missing dependency is one sentence saying what to
install.
"""

from __future__ import annotations

import importlib

from ..errors import ExecutorUnavailable

# name -> (the class, relative to this package; what it imports that may be missing; how to install that)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "local": (".local:LocalExecutor", "", ""),  # the standard library only: bubblewrap is optional (see local.py)
    "docker": (".docker:DockerExecutor", "docker-py", "pip install 'dpl[docker]'"),
    "ray": (".ray:RayExecutor", "Ray", "pip install 'dpl[ray]'"),
}
KINDS = tuple(REGISTRY)


def executor_class(kind: str) -> type:
    """The executor class registered as `kind`, imported now."""
    if kind not in REGISTRY:
        raise ExecutorUnavailable(f"Unknown executor {kind!r}.", hint=f"Use one of: {', '.join(KINDS)}.")
    target, needs, install = REGISTRY[kind]
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ImportError as e:
        if not needs:
            raise
        raise ExecutorUnavailable(f"The {kind} executor needs {needs} ({e.name or e} is not installed).", hint=f"{install}.") from None


def get_executor(kind: str, config: dict | None = None):
    return executor_class(kind)(config or {})
