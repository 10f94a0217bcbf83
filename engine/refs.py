"""Parsing what users type: `REPO@REF:PATH`, with REF a branch, a commit id
(or a unique prefix of one) and optional ancestry (`master^`, `master~3`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..storage.errors import InvalidRef
from ..storage.paths import normalize_path, validate_name

_ANCESTRY = re.compile(r"^(?P<base>[^~^]+)(?P<ancestry>(?:\^+|~\d*)*)$")


@dataclass(frozen=True)
class FileRef:
    repo: str
    ref: str | None  # None: the default branch
    path: str | None  # None: no path given

    @property
    def ref_or_default(self) -> str:
        return self.ref or "master"


def parse(text: str, *, path_allowed: bool = True, default_path: str | None = None) -> FileRef:
    """Split `repo[@ref][:path]`; validates the repo name and the path."""
    if not text:
        raise InvalidRef("An empty reference was given.", hint="Write REPO@BRANCH or REPO@BRANCH:/PATH.")
    head, sep, path = text.partition(":")
    repo, at, ref = head.partition("@")
    validate_name(repo, "repo")
    if at and not ref:
        raise InvalidRef(f"{text!r} has '@' but no branch or commit after it.", hint="Write REPO@BRANCH.")
    if sep and not path_allowed:
        raise InvalidRef(f"{text!r} has a path, but this command takes REPO@REF only.")
    if ref:
        split_ancestry(ref)  # validates
    if sep:
        return FileRef(repo, ref or None, normalize_path(path, allow_root=True))
    return FileRef(repo, ref or None, default_path)


def split_ancestry(ref: str) -> tuple[str, int]:
    """`master~3` -> ('master', 3); `abc^^` -> ('abc', 2)."""
    m = _ANCESTRY.match(ref)
    if not m:
        raise InvalidRef(f"{ref!r} is not a branch, a commit id or an ancestry like master^ or master~2.")
    depth = 0
    for op in re.findall(r"\^|~\d*", m.group("ancestry")):
        depth += 1 if op == "^" else int(op[1:] or 1)
    return m.group("base"), depth
