"""A spec's validation errors in words: JSON Schema's verdicts as one sentence naming the field.

jsonschema reports a path of keys and the rule that failed; a user wants
`spec.input.cross[0].pfs.glob: required field is missing.`, with the field
named as the spec wrote it (`emptyFiles`, not `empty_files`: `renames`) and,
of several verdicts, the one deepest in the document.  Used by engine/spec.py.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from .errors import InvalidSpec

if TYPE_CHECKING:
    import jsonschema


def field_path(parts, renames: dict | None = None) -> str:
    """`spec.input.cross[0].pfs`, naming each field as the spec wrote it (`emptyFiles`, not `empty_files`)."""
    out, parts = "spec", list(parts)
    for i, p in enumerate(parts):
        p = (renames or {}).get(tuple(parts[: i + 1]), p)
        out += f"[{p}]" if isinstance(p, int) else _key(p)
    return out


def _key(name: str) -> str:
    """`.name`, or `["odd name"]` for a key that would not read as one (newlines, dots, ...)."""
    return f".{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name) else f"[{json.dumps(name)}]"


def describe(error: jsonschema.ValidationError, renames: dict) -> InvalidSpec:
    where = field_path(error.absolute_path, renames)
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(k for k, v in error.schema.get("properties", {}).items() if "x-unsupported" not in v))
        field = f"{where}{_key(extra[0])}" if extra else where
        return InvalidSpec(f"{field}: unknown field.", hint=f"Fields allowed here: {known}.")
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return InvalidSpec(f"{where}.{missing}: required field is missing.")
    if v == "type":
        return InvalidSpec(f"{where}: expected {error.validator_value}, got {json.dumps(error.instance)[:60]}.")
    if v == "pattern":
        return InvalidSpec(f"{where}: {json.dumps(error.instance)[:60]} is not valid here.", hint=f"It must match {error.validator_value}.")
    if v == "enum":
        return InvalidSpec(f"{where}: {json.dumps(error.instance)} is not one of {', '.join(map(str, error.validator_value))}.")
    if v in ("minProperties", "maxProperties") and "cross" in error.schema.get("properties", {}):
        return InvalidSpec(f"{where}: an input must have exactly one of pfs, cross, union, join, group, cron.")
    if v in ("minItems", "minLength"):
        return InvalidSpec(f"{where}: must not be empty.")
    if v == "minimum":
        return InvalidSpec(f"{where}: must be at least {error.validator_value}.")
    return InvalidSpec(f"{where}: {error.message}.")


def best_error(errors, renames: dict) -> InvalidSpec:
    # Prefer the error deepest in the document: "spec.input.pfs.glob: required"
    # says more than "spec.input: is not valid under any schema".
    errors = sorted(errors, key=lambda e: -len(list(e.absolute_path)))
    return describe(errors[0], renames)
