"""A pipeline's code: the host files its step runs, and their content hash.

A local (or Ray) step runs files from the host, typically a script beside the
spec (`"cmd": ["python3", "train.py"]`).  Editing that script changes what the
step computes without changing the spec, so the content of those files is part
of every datum id, as an image digest is on Docker: the first job after an
edit reruns every datum, a revert finds the earlier outputs again, and
provenance names the exact code each output was made with.

Which files are code:
- `dpl.code` in the spec: globs relative to the spec's directory
  (`["*.py", "lib/**/*.py"]`), for helpers a command does not name;
- otherwise every word of `transform.cmd` and `transform.stdin` that names a
  file under the step's working directory (the spec's directory unless
  `transform.working_dir` says otherwise).  Programs elsewhere
  (`/usr/bin/python3`) are the environment, not the pipeline's code.

The fingerprint is taken when each job starts, so it is the code that really
ran, not the code that was there when the pipeline was created.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import xxhash

from .errors import InvalidSpec

# Docker runs the image's files: its digest already stands for the code.
HOST_CODE_EXECUTORS = ("local", "ray")


def declared_patterns(spec) -> list[str]:
    return list(spec.raw.get("dpl", {}).get("code", []))


def check_patterns(spec, code_dir: str | None) -> None:
    """At create time: each `dpl.code` glob is relative and matches a file."""
    for i, pattern in enumerate(declared_patterns(spec)):
        where = f"spec.dpl.code[{i}]"
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise InvalidSpec(f"{where}: {pattern!r} must be a glob relative to the spec's directory.", hint='Write e.g. "lib/*.py".')
        if code_dir is None:
            raise InvalidSpec(f"{where}: code files need the spec's directory, and this spec came from stdin.",
                              hint="Pass the spec as a file: dpl create-pipeline path/to/spec.json.")
        if not _glob(Path(code_dir), pattern):
            raise InvalidSpec(f"{where}: {pattern!r} matches no file in {code_dir}.", hint="Check the pattern, or remove it.")


def code_files(spec, code_dir: str | None, executor: str) -> tuple[Path | None, list[str]]:
    """(root, sorted paths relative to root) of the files that are the step's code."""
    if code_dir is None:
        return None, []
    root = Path(code_dir)
    patterns = declared_patterns(spec)
    if patterns:
        return root, sorted({rel for p in patterns for rel in _glob(root, p)})
    if executor not in HOST_CODE_EXECUTORS:
        return None, []
    base = Path(spec.transform.get("working_dir") or code_dir)
    if not base.is_dir():
        return None, []
    base = base.resolve()
    found = set()
    for word in _words(spec.transform):
        try:
            candidate = (base / word).resolve() if not os.path.isabs(word) else Path(word).resolve()
            if candidate.is_file() and candidate.is_relative_to(base):
                found.add(str(candidate.relative_to(base)))
        except (OSError, ValueError):
            continue  # a word no file can be named by (too long, a NUL): an argument, not code
    return base, sorted(found)


def fingerprint(spec, code_dir: str | None, executor: str) -> dict:
    """{"root", "files": {path: xxh3-128 hex}, "hash"} or {} when the step has no host code."""
    root, files = code_files(spec, code_dir, executor)
    if not files:
        return {}
    hashes = {rel: _hash_file(root / rel) for rel in files}
    total = xxhash.xxh3_128()
    for rel, digest in hashes.items():
        total.update(f"{rel}\0{digest}\n".encode())
    return {"root": str(root), "files": hashes, "hash": total.hexdigest()}


def changed_files(before: dict, after: dict) -> list[str]:
    """Paths whose content differs between two fingerprints (added and removed too)."""
    old, new = before.get("files", {}), after.get("files", {})
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def _words(transform: dict) -> list[str]:
    # A cmd element with spaces is a script (`sh -c "python3 train.py"`): its words count too.
    words = []
    for text in list(transform.get("cmd", [])) + list(transform.get("stdin", [])):
        try:
            words.extend(shlex.split(text, comments=True) if any(c.isspace() for c in text) else [text])
        except ValueError:  # an unbalanced quote: the shell will complain, not us
            words.extend(text.split())
    # `--config=cfg.yaml` names cfg.yaml too.
    return [part for w in words for part in {w, w.partition("=")[2]} if part and not part.startswith("-")]


def _glob(root: Path, pattern: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file()]


def _hash_file(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
