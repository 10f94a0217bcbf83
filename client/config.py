"""Which server the `dpl` command talks to, if any.

`--address URL`, else `DPL_ADDRESS`, else the address `dpl connect URL`
saved in the user's config file ($XDG_CONFIG_HOME/dpl/config.json, by
default ~/.config/dpl/config.json).  "local" (or an empty value) at any level
means the embedded store and stops the search there, so `DPL_ADDRESS=local`
overrides a saved connection for one shell.

The token sent to a server is `DPL_TOKEN`, else the one `dpl auth login`
saved for that address (`tokens` in the same file, which is therefore
written readable by its owner only): a token is never sent to a server it
was not saved for.

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
    # 0600 from the first byte: the file may hold tokens.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
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


def token_for(url: str | None) -> str | None:
    """The token to send to the server at `url`: DPL_TOKEN, else the one saved for that address."""
    if os.environ.get("DPL_TOKEN"):
        return os.environ["DPL_TOKEN"].strip()
    tokens = read_config().get("tokens")
    return tokens.get(url.rstrip("/")) if isinstance(tokens, dict) and url else None


def save_token(url: str, token: str | None) -> str:
    """Remember (or, with None, forget) the token for the server at `url`."""
    config = read_config()
    tokens = config.get("tokens") if isinstance(config.get("tokens"), dict) else {}
    if token is None:
        tokens.pop(url.rstrip("/"), None)
    else:
        tokens[url.rstrip("/")] = token
    config["tokens"] = tokens
    return write_config(config)
