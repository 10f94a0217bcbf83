"""Executors: where a datum's step runs (local sandbox, Docker, Ray).

One module per implementation behind the `Executor` Protocol in `base`;
`get_executor` picks one by name, importing its dependencies only when it
is chosen, so the embedded default needs neither docker-py nor Ray.
"""

from __future__ import annotations

from ..errors import ExecutorUnavailable

KINDS = ("local", "docker", "ray")


def get_executor(kind: str, config: dict | None = None):
    if kind == "local":
        from .local import LocalExecutor

        return LocalExecutor()
    if kind == "docker":
        try:
            from .docker import DockerExecutor
        except ImportError as e:
            raise ExecutorUnavailable(f"The docker executor needs docker-py ({e.name} is not installed).", hint="pip install 'dpl[docker]'.") from None
        return DockerExecutor(config or {})
    if kind == "ray":
        try:
            from .ray import RayExecutor
        except ImportError as e:
            raise ExecutorUnavailable(f"The ray executor needs Ray ({e.name} is not installed).", hint="pip install 'dpl[ray]'.") from None
        return RayExecutor(config or {})
    raise ExecutorUnavailable(f"Unknown executor {kind!r}.", hint=f"Use one of: {', '.join(KINDS)}.")
