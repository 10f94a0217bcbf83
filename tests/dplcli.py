"""Run the real `dpl` command in a subprocess, as a user would (and `api`: the engine call behind one)."""

from __future__ import annotations

import os
import subprocess
import sys

DPL = os.path.join(os.path.dirname(sys.executable), "dpl")


def dpl(*args, store=None, cwd=None, input=None, check=True, env=None, timeout=300) -> subprocess.CompletedProcess:
    environ = dict(os.environ, **(env or {}))
    if store is not None:
        environ["DPL_STORE"] = str(store)
    proc = subprocess.run(
        [DPL, *map(str, args)],
        cwd=cwd,
        input=input if isinstance(input, (bytes, type(None))) else input.encode(),
        capture_output=True,
        env=environ,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dpl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return proc


def popen(*args, store=None, **kw) -> subprocess.Popen:
    environ = dict(os.environ)
    if store is not None:
        environ["DPL_STORE"] = str(store)
    return subprocess.Popen([DPL, *map(str, args)], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def api(store, method: str, *args, **kw):
    """One engine call, the one the `dpl` command of the same name makes, without a process's start-up."""
    from dpl.engine import Store

    s = Store.open(store)
    try:
        return getattr(s, method)(*args, **kw)
    finally:
        s.close()
