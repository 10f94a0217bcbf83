"""Pipeline specs: Pachyderm's format (JSON, or YAML), validated against specs/pipeline.schema.json.

The JSON Schema is the single source of truth for what a spec may hold;
its verdicts become one sentence naming the JSON path of the offending field
(`spec.transform.cmd: ...`, worded in specerrors.py); this module then checks what a schema cannot
say (globs that do not compile, input names that collide outside a union,
`$n` in join_on / group_by beyond the glob's groups).  Before that it reads
field names as Pachyderm does (`parallelismSpec` is `parallelism_spec`) and refuses, by name, the
Pachyderm features the schema marks `x-unsupported`.  A `Spec` is the
validated, normalised spec with the hashes that decide what a job may skip.
Reading the text of a spec file (JSON, YAML, streams of specs) is specfile.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources

from ..storage.errors import DplError
from . import specfile
from .errors import InvalidSpec
from .specerrors import best_error, field_path
from ..storage.paths import validate_name

DEFAULT_DATUM_TRIES = 3  # as in Pachyderm
MAX_DEPTH = 64  # levels of JSON nesting a spec may have (cross of union of ... is a few)


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("dpl.specs").joinpath("pipeline.schema.json").read_text())


# -------------------------------------------------------------------- hashes


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_duration(text: str | None) -> float | None:
    """Go-style durations as Pachyderm writes them: `30s`, `1h30m`, `250ms`."""
    if not text:
        return None
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", text))


def parse_memory(text: str | None) -> int | None:
    """Kubernetes quantities (`512Mi`, `2G`, `1.5Gi`) in bytes."""
    if not text:
        return None
    m = re.fullmatch(r"([0-9.]+)([KMGTPEkmgtpe])?(i?)B?", text)
    if not m:
        return None
    power = "kmgtpe".index(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


# ---------------------------------------------------------------------- spec


@dataclass(frozen=True)
class PfsInput:
    name: str
    repo: str
    branch: str
    glob: str
    join_on: str | None
    group_by: str | None
    outer_join: bool
    lazy: bool
    empty_files: bool


class Spec:
    def __init__(self, raw: dict):
        self.raw = raw

    @property
    def name(self) -> str:
        return self.raw["pipeline"]["name"]

    @property
    def transform(self) -> dict:
        """The transform the step runs: a notebook step's command is made from `dpl.notebook` (engine/notebook.py)."""
        if "notebook" in self.raw.get("dpl", {}):
            from . import notebook

            return notebook.transform(self)
        return self.raw["transform"]

    @property
    def input(self) -> dict:
        """The input tree the engine reads: a cron input is the pfs input of its repo."""
        from . import cron

        return cron.as_pfs(self.name, self.raw["input"])

    def cron_inputs(self) -> list:
        from . import cron

        return cron.cron_inputs(self.name, self.raw["input"])

    @property
    def parallelism(self) -> int:
        return max(1, int(self.raw.get("parallelism_spec", {}).get("constant", 1) or 1))

    @property
    def datum_tries(self) -> int:
        return int(self.raw.get("datum_tries", DEFAULT_DATUM_TRIES))

    @property
    def datum_timeout(self) -> float | None:
        return parse_duration(self.raw.get("datum_timeout"))

    @property
    def job_timeout(self) -> float | None:
        return parse_duration(self.raw.get("job_timeout"))

    @property
    def output_branch(self) -> str:
        return self.raw.get("output_branch", "master")

    @property
    def executor(self) -> str | None:
        return self.raw.get("dpl", {}).get("executor")

    @property
    def network(self) -> bool:
        return bool(self.raw.get("dpl", {}).get("network", False))

    @property
    def reprocess_every_job(self) -> bool:
        return self.raw.get("reprocess_spec") == "every_job"

    def pfs_inputs(self) -> list[PfsInput]:
        return list(_pfs_nodes(self.input))

    def input_repos(self) -> list[tuple[str, str]]:
        return sorted({(p.repo, p.branch) for p in self.pfs_inputs()})

    def to_json(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=True)

    def spec_hash(self) -> str:
        return _digest(self.raw)

    def transform_hash(self) -> str:
        """What a datum's output depends on besides its input files.

        Image, command, stdin and env (and Pachyderm's `salt`) go in;
        secrets go in by name and key only, never by value; parallelism and
        resources stay out, so scaling a pipeline reprocesses nothing.
        """
        t = self.transform
        keep = {k: t.get(k) for k in ("image", "cmd", "stdin", "env", "user", "working_dir", "err_cmd", "err_stdin", "accept_return_code")}
        keep["secrets"] = [{k: s.get(k) for k in ("name", "key", "env_var", "mount_path")} for s in t.get("secrets", [])]
        keep["salt"] = self.raw.get("salt")
        keep["empty_files"] = [(p.name, p.empty_files) for p in self.pfs_inputs()]
        return _digest(keep)


def _pfs_nodes(node: dict):
    for kind, value in node.items():
        if kind == "pfs":
            yield PfsInput(
                name=value.get("name") or value["repo"],
                repo=value["repo"],
                branch=value.get("branch", "master"),
                glob=value["glob"],
                join_on=value.get("join_on"),
                group_by=value.get("group_by"),
                outer_join=bool(value.get("outer_join", False)),
                lazy=bool(value.get("lazy", False)),
                empty_files=bool(value.get("empty_files", False)),
            )
        elif kind in ("cross", "union", "join", "group"):
            for child in value:
                yield from _pfs_nodes(child)


def load_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate a spec (JSON, or YAML as `pachctl` reads it); raise `InvalidSpec` naming the field."""
    raw = specfile.parse(text, source)
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{source}: a spec is a JSON object, not {type(raw).__name__}.")
    if _depth(raw) > MAX_DEPTH:
        raise InvalidSpec(f"{source} is nested more than {MAX_DEPTH} levels deep, which no pipeline spec needs.")
    renames: dict = {}
    _normalise(raw, schema(), [], renames)
    import jsonschema  # here, not at the top: every CLI call imports this module, few validate a spec

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(raw), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        raise best_error(errors, renames)
    _check_semantics(raw)
    return Spec(raw)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _normalise(value, sch: dict, path: list, renames: dict) -> None:
    """Read field names as Pachyderm does, in place, and refuse the features it has and dpl lacks.

    Pachyderm takes each field under its proto name (`parallelism_spec`) or
    its JSON name (`parallelismSpec`); the spec keeps the former, and
    `renames` remembers what the spec wrote, for error messages.  Only the
    spec's own objects are walked, never maps of the user's (`env`, labels).
    """
    while "$ref" in sch:
        sch = schema()["$defs"][sch["$ref"].rpartition("/")[2]]
    if isinstance(value, list) and "items" in sch:
        for i, child in enumerate(value):
            _normalise(child, sch["items"], path + [i], renames)
    if not (isinstance(value, dict) and "properties" in sch):
        return
    props = sch["properties"]
    for key in list(value):
        name = _snake(key)
        if key in props or name not in props:
            continue
        if name in value:
            raise InvalidSpec(f"{field_path(path + [key], renames)}: the field is given twice, as {name} and {key}.")
        value[name] = value.pop(key)
        renames[tuple(path + [name])] = key
    for key, child in value.items():
        field = props.get(key, {})
        if "x-unsupported" in field and child not in (False, None):
            raise InvalidSpec(f"{field_path(path + [key], renames)}: {field['x-unsupported']}", hint=field.get("x-hint"))
        _normalise(child, field, path + [key], renames)


def _depth(value) -> int:
    """How deeply JSON containers nest (without recursion: the input may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _check_semantics(raw: dict) -> None:
    from . import cron, globs, notebook, ohmyglob

    def walk(node, path):
        (kind, value), = node.items()
        where = f"{path}.{kind}"
        if kind == "cron":
            cron.check(where, value)
            repo = value.get("repo") or f"{raw['pipeline']['name']}_{value['name']}"
            try:
                validate_name(repo, "repo")
            except DplError as e:
                raise InvalidSpec(f"{where}: the cron repo {e.message}", hint="Set `repo`, or a simpler `name`.") from None
            return
        if kind == "pfs":
            try:
                glob = globs.compile_glob(value["glob"])
            except InvalidSpec as e:
                raise InvalidSpec(f"{where}.glob: {e.message}", hint=e.hint) from None
            # join_on / group_by may be omitted, as in Pachyderm (the empty key);
            # a reference to a group the glob lacks would silently be empty, so it is refused.
            for key in ("join_on", "group_by"):
                for ref in ohmyglob.references(value.get(key) or ""):
                    if ref > glob.groups:
                        raise InvalidSpec(f"{where}.{key}: ${ref} refers to a capture group the glob does not have ({glob.groups}).",
                                          hint="Number the glob's parenthesised groups from $1; $0 is the whole match.")
            return
        for i, child in enumerate(value):
            walk(child, f"{where}[{i}]")

    walk(raw["input"], "spec.input")
    _check_names(cron.as_pfs(raw["pipeline"]["name"], raw["input"]), set())
    notebook.check(raw)


def _check_names(node: dict, names: set[str]) -> None:
    """Pachyderm's ppsutil.validateNames: input names are unique, except that the
    children of a union may share one (a datum holds only one of them); a name
    inside a union still may not be used outside it."""
    (kind, value), = node.items()
    if kind == "pfs":
        name = value.get("name") or value["repo"]
        if name in ("out", ".env"):
            raise InvalidSpec(f"spec.input: an input may not be called {name!r} (that is /pfs/{name}).", hint="Set the input's `name`.")
        if name in names:
            raise InvalidSpec(f"spec.input: the input name {name!r} is used twice.", hint="Give each pfs input a distinct `name`.")
        names.add(name)
    elif kind == "union":
        seen: set[str] = set()
        for child in value:
            mine = set(names)
            _check_names(child, mine)
            seen |= mine
        names |= seen
    else:
        for child in value:
            _check_names(child, names)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in pipeline -> input repo edges, as a list of names, if any."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def load_specs(text: str, source: str = "<spec>") -> list[Spec]:
    """Every spec of a spec file, in order, as `pachctl create pipeline -f` reads it:
    one spec, a JSON array of specs, JSON objects one after another, or a
    YAML stream (documents separated by `---`).  Each is validated as
    `load_spec` does, and an error names which one it is in."""
    docs = specfile.documents(text, source)
    if len(docs) == 1:
        return [load_spec(text, source)]  # a single spec: its errors say exactly what they always said
    return [_load_nth(doc, source, i, len(docs)) for i, doc in enumerate(docs)]


def _load_nth(text: str, source: str, i: int, count: int) -> Spec:
    which = f"{source} (spec {i + 1} of {count})"
    try:
        return load_spec(text, which)
    except InvalidSpec as e:
        if which in e.message:
            raise
        raise InvalidSpec(f"{which}: {e.message}", hint=e.hint) from None
