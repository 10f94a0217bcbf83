"""Reaching the Docker engine for the docker executor: the client, the image, and the leftovers.

Everything here is about the engine rather than about running a step: a
client that has answered a ping (or one sentence on why there is none), the
spec's image (pulled when the engine lacks it, as Pachyderm would), and the
labels by which the containers of a dpl process that died are found and
removed.  Running datums in containers is docker.py and dockerbox.py.
"""

from __future__ import annotations

import logging
import os
import socket

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound

from .base import JobContext
from .dockerbox import _reason, _remove
from ..errors import ExecutorUnavailable
from ...storage import pids

log = logging.getLogger("dpl")

LABEL = "dpl.executor"


def owner() -> str:
    """The `dpl.owner` label of this process's containers."""
    return f"{socket.gethostname()}:{os.getpid()}"


def client(ctx: JobContext, config: dict, slots: int):
    """A client of the engine at DOCKER_HOST (or the default socket) that answers."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        found = docker.from_env(timeout=int(config.get("docker_timeout", 120)), max_pool_size=max(10, slots + 4))
        found.ping()
        return found
    except (DockerException, requests.RequestException, OSError) as e:
        why = _reason(e) or type(e).__name__
        raise ExecutorUnavailable(
            f"Pipeline {ctx.pipeline!r} cannot run on docker: the Docker engine at {where} is not reachable ({why}).",
            hint="Start dockerd (or point DOCKER_HOST at a running engine), or run with --executor local.",
        ) from None


def image(engine, ctx: JobContext, name: str):
    """The image, pulled if the engine does not have it (as Pachyderm would)."""
    try:
        return engine.images.get(name)
    except ImageNotFound:
        pass
    except APIError as e:
        raise ExecutorUnavailable(f"Pipeline {ctx.pipeline!r} cannot run on docker: image {name!r} is not usable ({_reason(e)}).") from None
    log.warning("image %s is not on the Docker engine; pulling it", name)
    try:
        repo, tag = split_tag(name)
        return engine.images.pull(repo, tag=tag)
    except (APIError, DockerException, requests.RequestException) as e:
        raise ExecutorUnavailable(
            f"Pipeline {ctx.pipeline!r} cannot run on docker: image {name!r} is not on the Docker engine and could not be pulled ({_reason(e)}).",
            hint="Build or load it first (`docker build -t`, `docker load`), or fix transform.image.",
        ) from None


def split_tag(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


_SWEPT: set[str] = set()


def sweep(engine) -> None:
    """Remove containers left by dpl processes of this host that died (once per process and engine)."""
    base = getattr(engine.api, "base_url", "")
    if base in _SWEPT:
        return
    _SWEPT.add(base)
    host = socket.gethostname()
    try:
        containers = engine.containers.list(all=True, filters={"label": LABEL})
    except (APIError, requests.RequestException):
        return
    for c in containers:
        h, _, pid = c.labels.get("dpl.owner", "").partition(":")
        if h == host and pid.isdigit() and not pids.alive(pid):
            _remove(c)
