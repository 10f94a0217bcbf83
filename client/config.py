"""Which server the `dpl` command talks to, if any.

`--address URL`, else `DPL_ADDRESS`, else the address `dpl connect URL`
saved in the user's config file ($XDG_CONFIG_HOME/dpl/config.json, by
default ~/.config/dpl/config.json).  "local" (or an empty value) at any level
means the embedded store and stops the search there, so `DPL_ADDRESS=local`
overrides a saved connection for one shell.

This module is read on every `dpl` call, so it imports nothing heavy.
"""

from __future__ import annotations

import json
import os

LOCAL = "local"


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dpl", "config.json")


def read_config() -> dict:
    try:
        with open(config_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_config(data: dict) -> str:
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def address(option: str | None = None) -> str | None:
    """The server URL to act on, or None for the embedded store."""
    for value in (option, os.environ.get("DPL_ADDRESS"), read_config().get("address")):
        if value is None:
            continue
        value = value.strip()
        return None if value in ("", LOCAL) else value
    return None
