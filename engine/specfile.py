"""Spec files: the text formats `pachctl create pipeline -f` reads, as plain values.

A file holds one spec (JSON, or YAML as Go's YAML-to-JSON reads it), a JSON
array of specs, JSON objects one after another, or a YAML stream (documents
separated by `---`).  This module only cuts and parses text; spec.py
validates what it gives.
"""

from __future__ import annotations

import json
import re

from .errors import InvalidSpec

BOM = "\ufeff"  # some editors write one


def parse(text: str, source: str):
    """The one value a spec text holds: JSON, or YAML when it does not start
    as JSON does (as pachctl decides)."""
    text = text.removeprefix(BOM)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raw = _load_yaml(text, source) if text.lstrip()[:1] not in ("{", "[", "") else None
        if not isinstance(raw, dict):
            raise InvalidSpec(f"{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.", hint="Check the brackets and commas near there.") from None
        return raw
    except RecursionError:
        raise InvalidSpec(f"{source} is nested too deeply to be a pipeline spec.") from None


def documents(text: str, source: str) -> list[str]:
    """The text of each spec in a file, in order (the whole text when it holds one)."""
    text = text.removeprefix(BOM)
    stripped = text.lstrip()
    if stripped.startswith("["):
        docs = parse(text, source)
        if not docs:
            raise InvalidSpec(f"{source} holds an empty list: no spec.", hint="Put one spec object or more in the list.")
        return [json.dumps(doc) for doc in docs]
    if stripped.startswith("{"):
        return _json_objects(text, source)
    return _yaml_documents(text)


def _load_yaml(text: str, source: str):
    """YAML read as Go's YAML-to-JSON reads it for pachctl: plain data, timestamps stay strings, keys are strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):  # `*name` could make a small file a huge spec
                raise InvalidSpec(f"{source}{_at(self.peek_event().start_mark)}: YAML aliases (*name) are not allowed in a spec.", hint="Write the value out.")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            self.flatten_mapping(node)
            for key, _ in node.value:
                if key.tag != "tag:yaml.org,2002:str":
                    raise InvalidSpec(f"{source}{_at(key.start_mark)}: the key {key.value!r} is not a string.", hint=f'Quote it: "{key.value}".')
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as e:
        if "single document" in str(e.context):
            raise InvalidSpec(f"{source} holds more than one YAML document.", hint="`dpl create-pipeline` (and `load_specs`) read a stream of specs; `load_spec` reads one.") from None
        raise InvalidSpec(f"{source} is not valid JSON or YAML: {e.problem}{_at(e.problem_mark)}.", hint="Check the indentation near there.") from None
    except yaml.YAMLError as e:
        raise InvalidSpec(f"{source} is not valid JSON or YAML: {e}.") from None
    except RecursionError:
        raise InvalidSpec(f"{source} is nested too deeply to be a pipeline spec.") from None


def _at(mark) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _json_objects(text: str, source: str) -> list[str]:
    """The texts of JSON values written one after another (a JSON stream)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return out or [text]
        try:
            _, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return out + [text[at:]] if out else [text]  # load_spec says what is wrong with it
        except RecursionError:
            raise InvalidSpec(f"{source} is nested too deeply to be a pipeline spec.") from None
        out.append(text[at:end])
        at = end


_DOCUMENT_MARK = re.compile(r"^(---|\.\.\.)(?=\s|$)", re.MULTILINE)


def _yaml_documents(text: str) -> list[str]:
    """A YAML stream cut at its document markers (`---` or `...` at the start
    of a line, where YAML allows them only as markers); empty documents dropped."""
    docs, start = [], 0
    for m in _DOCUMENT_MARK.finditer(text):
        docs.append(text[start:m.start()])
        start = m.end() if m.group(1) == "---" else text.find("\n", m.end()) + 1 or len(text)
    docs.append(text[start:])
    kept = [d for d in docs if d.strip() and not all(line.lstrip().startswith("#") or not line.strip() for line in d.splitlines())]
    return kept or [text]
