"""Reading a store back in tests: what a repo holds, as bytes."""

from __future__ import annotations

import os

from dpl.engine import Store


def outputs(store: Store | str | os.PathLike, repo: str, ref: str = "master") -> dict[str, bytes]:
    """Every file of `repo@ref`, path to bytes; `store` is an open Store or a store directory."""
    s = store if isinstance(store, Store) else Store.open(store)
    try:
        return {p: s.read_file(repo, ref, p) for p in s.files_under(repo, ref, "/")["path"].to_pylist()}
    finally:
        if s is not store:
            s.close()
