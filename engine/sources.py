"""What a put-file reads: local sources planned as `cp` would, and walked.

`plan_sources` decides where each source lands in the repo; `walk` lists
the (repo path, local path) of every file a source holds.  Apart from
engine/files.py, which writes what these name, because none of it needs
the store.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterator

from .readahead import source_error
from ..storage.errors import InvalidPath, SourceNotFound
from ..storage.paths import normalize_path


@dataclass(frozen=True)
class Source:
    """One thing to put: a local path (file or directory) or `-` for stdin."""

    local: str
    dest: str  # repo path of the file, or of the directory the tree lands in


def plan_sources(dest: str | None, sources: list[str], *, recursive: bool) -> list[Source]:
    """Where each source lands, following `cp` conventions.

    One file and a destination path: the file is stored at that path (or
    inside it when it ends in `/`).  One directory: its contents land under
    the destination (default the root).  Several sources: each lands under
    the destination by its base name.
    """
    if not sources:
        raise SourceNotFound("No source was given.", hint="Give a file, a directory with -r, or - for stdin.")
    plans = []
    for src in sources:
        if src == "-":
            if dest is None or dest.endswith("/") or dest == "/":
                raise InvalidPath("Reading stdin needs a file path to store it at.", hint="Write REPO@BRANCH:/path/file -")
            plans.append(Source("-", normalize_path(dest)))
            continue
        try:
            mode = os.stat(src).st_mode
        except FileNotFoundError:
            if os.path.islink(src):
                raise SourceNotFound(f"Source {src!r} is a dangling symbolic link: its target {os.readlink(src)!r} does not exist.",
                                     hint="Put the file the link meant, or restore its target.") from None
            raise SourceNotFound(f"Source {src!r} does not exist.") from None
        except PermissionError:
            raise SourceNotFound(f"Source {src!r} cannot be read (permission denied).") from None
        if stat.S_ISDIR(mode) and not recursive:
            raise SourceNotFound(f"Source {src!r} is a directory.", hint="Pass -r to put a directory recursively.")
        base = os.path.basename(os.path.normpath(src))
        if stat.S_ISDIR(mode):
            target = dest or "/"
            if len(sources) > 1:
                target = target.rstrip("/") + "/" + base
            plans.append(Source(src, normalize_path(target, allow_root=True)))
        elif dest is None or dest.endswith("/") or dest == "/" or len(sources) > 1:
            plans.append(Source(src, normalize_path((dest or "/").rstrip("/") + "/" + base)))
        else:
            plans.append(Source(src, normalize_path(dest)))
    return plans


def walk(src: Source) -> Iterator[tuple[str, str]]:
    """(repo path, local path) of every file a source holds, directories expanded.

    Symbolic links are followed, to files and to directories alike (a tree
    built of links puts what it shows); a link back to a directory it is
    inside would never end, and a link to nothing has nothing to put: both
    are refused, naming the link.
    """
    if src.local == "-" or not os.path.isdir(src.local):
        yield src.dest, src.local
        return
    prefix = "" if src.dest == "/" else src.dest
    root = os.stat(src.local)
    yield from _walk_dir(src.local, f"{prefix}/", {(root.st_dev, root.st_ino): src.local})


def _walk_dir(local: str, base: str, ancestors: dict[tuple[int, int], str]) -> Iterator[tuple[str, str]]:
    """The files under one local directory; `ancestors` are the directories
    (by device and inode) this one is inside, where a loop would lead back."""
    try:
        entries = sorted(os.scandir(local), key=lambda e: e.name)
    except OSError as e:
        source_error(local, e)
    subdirs = []
    for entry in entries:
        # d_type answers for plain files and directories without a stat;
        # only a link costs one (to see what it points at).
        if entry.is_symlink():
            try:
                target = os.stat(entry.path)
            except FileNotFoundError:
                raise SourceNotFound(
                    f"{entry.path!r} is a dangling symbolic link: its target {os.readlink(entry.path)!r} does not exist.",
                    hint="Remove the link or restore its target, then put again.",
                ) from None
            except OSError as e:
                raise SourceNotFound(f"Symbolic link {entry.path!r} cannot be followed ({e.strerror}).",
                                     hint="Remove the link or fix its target, then put again.") from None
            if stat.S_ISDIR(target.st_mode):
                key = (target.st_dev, target.st_ino)
                if key in ancestors:
                    raise SourceNotFound(
                        f"Symbolic link {entry.path!r} points back to {ancestors[key]!r}, a directory it is inside: a loop.",
                        hint="Remove the link, or put the directory it points at on its own.",
                    )
                subdirs.append((entry, key))
                continue
            yield base + entry.name, entry.path
        elif entry.is_dir():
            st = entry.stat()
            subdirs.append((entry, (st.st_dev, st.st_ino)))
        else:
            yield base + entry.name, entry.path
    for entry, key in subdirs:
        yield from _walk_dir(entry.path, f"{base}{entry.name}/", {**ancestors, key: entry.path})
