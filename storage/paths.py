"""Names and paths: what a repo, branch or file may be called.

Every path that enters the store goes through `normalize_path`, so that no
stored path can escape the repo root and two spellings of one file are one
file.
"""

from __future__ import annotations

import posixpath
import re

from .errors import InvalidName, InvalidPath

# Pachyderm's rule for repo and pipeline names, which we also apply to branches.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
MAX_PATH_BYTES = 4096


def validate_name(name: str, kind: str = "repo") -> str:
    if not _NAME.match(name or ""):
        raise InvalidName(
            f"{name!r} is not a valid {kind} name.",
            hint="Use 1-63 letters, digits, '_' or '-'.",
        )
    return name


def normalize_path(path: str, *, allow_root: bool = False) -> str:
    """Return the canonical form `/a/b` of a path inside a repo.

    `..` components are refused rather than resolved: a path that mentions
    its parent is almost always a mistake or an attack, even when it would
    land inside the repo.
    """
    if "\x00" in path:
        raise InvalidPath("A path may not contain a NUL character.")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"Path {path!r} is not valid UTF-8.", hint="Rename the file with a UTF-8 name.") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"Path is longer than {MAX_PATH_BYTES} bytes.")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPath(
            f"Path {path!r} escapes the repo root.",
            hint="Paths are relative to the repo root and may not contain '..'.",
        )
    if not parts:
        if allow_root:
            return "/"
        raise InvalidPath("A file path is needed here, not the repo root.", hint="Give a path such as /data/file.csv.")
    return "/" + "/".join(parts)


def join(directory: str, name: str) -> str:
    return normalize_path(posixpath.join(directory, name))
