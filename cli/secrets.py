"""Commands for secrets: create-secret, list-secret, delete-secret.

Values go in and never come out: listings show names and keys only.
"""

from __future__ import annotations

from typing import List

import typer

from . import render
from .render import Output, ago
from ..storage.errors import DplError

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")


def _store():
    from .main import store  # one place opens the store (and decides which)

    return store()


def _secret_pairs(pairs: List[str], option: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DplError(f"{option} {pair!r} is not KEY=VALUE.", hint=f"Write {option} key=value.")
        out.append((key, value))
    return out


def register(app: typer.Typer) -> None:
    @app.command("create-secret")
    def create_secret(
        name: str,
        from_literal: List[str] = typer.Option([], "--from-literal", help="A key and its value, KEY=VALUE (repeatable)."),
        from_file: List[str] = typer.Option([], "--from-file", help="A key and a file holding its value, KEY=PATH (repeatable)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a secret of that name."),
    ):
        """Store a secret that pipeline specs can name in transform.secrets (values never appear in specs or logs)."""
        data = dict(_secret_pairs(from_literal, "--from-literal"))
        for key, path in _secret_pairs(from_file, "--from-file"):
            try:
                data[key] = open(path, encoding="utf-8").read()
            except OSError as e:
                raise DplError(f"Cannot read {path} for key {key!r}: {e.strerror}.") from None
            except UnicodeDecodeError:
                raise DplError(f"{path} (key {key!r}) is not UTF-8 text; secrets hold text.") from None
        info = _store().create_secret(name, data, overwrite=overwrite)
        render.info(f"created secret {name} ({', '.join(info['keys'])})")

    @app.command("list-secret")
    def list_secret(output: Output = OutputOpt):
        """List secrets: names and keys, never values."""
        render.table(_store().list_secrets(), [("name", "NAME", None), ("keys", "KEYS", ", ".join), ("created", "CREATED", ago)], output)

    @app.command("delete-secret")
    def delete_secret(name: str):
        """Delete a secret (pipelines that name it fail at their next job until it exists again)."""
        _store().delete_secret(name)
        render.info(f"deleted secret {name}")
