"""Bad input, generated: hostile paths, malformed refs and specs, truncated JSON.

Every case must end in a `DplError` (at the CLI: exit code 1, "error:" on
stderr, no traceback) and leave the store exactly as it was: the whole
metadata database and the spec history are compared before and after.
Most cases go through the Python API (fast); a sample goes through the CLI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dpl.engine import Store, refs
from dpl.engine import spec as specs
from dpl.engine.files import Source, plan_sources
from dpl.storage.errors import DplError
from dpl.storage.paths import MAX_PATH_BYTES, normalize_path
from dplcli import dpl

FAST = settings(max_examples=int(os.environ.get("DPL_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CLI = settings(max_examples=int(os.environ.get("DPL_FUZZ_CLI_EXAMPLES", 5)), deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

SPEC = {
    "pipeline": {"name": "up"},
    "description": "upper-case every file",
    "input": {"cross": [{"pfs": {"repo": "data", "glob": "/*"}}, {"pfs": {"repo": "data", "glob": "/", "name": "all"}}]},
    "transform": {"cmd": ["sh", "-c", "cat /pfs/data/* | tr a-z A-Z > /pfs/out/up"], "env": {"A": "1"}},
    "parallelism_spec": {"constant": 1},
    "datum_tries": 1,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "store"
    s = Store.init(root)
    src = root.parent / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    (src / "b.txt").write_text("beta")
    s.create_repo("data")
    s.put_files("data", "master", plan_sources(None, [str(src)], recursive=True))
    s.put_files("data", "dev", [Source(str(src / "a.txt"), "/only-a")])
    s.create_pipeline(json.dumps(SPEC))
    s.run_jobs()
    s.start_commit("data", "wip")
    s.src = src
    return s


def snapshot(s: Store):
    db = sqlite3.connect(s.root / "meta.db")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        rows = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}
    finally:
        db.close()
    return rows, (s.root / "specs.git" / "refs" / "heads" / "master").read_text()


def refused(s: Store, call):
    """`call()` must raise a DplError and change nothing."""
    before = snapshot(s)
    with pytest.raises(DplError) as e:
        call()
    assert e.value.message and "\n" not in e.value.message.strip()
    assert snapshot(s) == before
    return e.value


# ------------------------------------------------------------------ paths

unusual = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
surrogate = st.characters(whitelist_categories=["Cs"])


@FAST
@given(st.text(max_size=300))
def test_a_normalised_path_never_escapes_and_is_canonical(text):
    try:
        path = normalize_path(text, allow_root=True)
    except DplError:
        return
    assert path.startswith("/") and "\x00" not in path
    parts = path.split("/")[1:]
    assert path == "/" or all(p not in ("", ".", "..") for p in parts)
    assert len(path.encode("utf-8")) <= MAX_PATH_BYTES
    assert normalize_path(path, allow_root=True) == path


@st.composite
def hostile_paths(draw):
    a, b = draw(unusual), draw(unusual)
    kind = draw(st.sampled_from(["dotdot", "nul", "long", "surrogate"]))
    if kind == "dotdot":
        return f"{a}/{draw(st.sampled_from(['..', '/..', '../..', '.././.']))}/{b}".replace("//", "/" * draw(st.integers(1, 3)))
    if kind == "nul":
        return a + "\x00" + b
    if kind == "long":
        return "/" + "/".join(["x" * 200] * draw(st.integers(21, 40))) + a
    return a + draw(surrogate) + b


@FAST
@given(hostile_paths())
def test_a_hostile_destination_path_is_refused_and_changes_nothing(store, dest):
    src = str(store.src / "a.txt")
    refused(store, lambda: store.put_files("data", "master", plan_sources(dest, [src], recursive=False)))
    refused(store, lambda: store.delete_files("data", "master", [dest]))


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=1, max_size=20).filter(lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")))
def test_a_source_file_whose_name_is_not_utf8_is_refused(store, tmp_path_factory, name):
    try:
        name.decode("utf-8")
        assume(False)  # a valid name is not bad input
    except UnicodeDecodeError:
        pass
    d = tmp_path_factory.mktemp("names")
    with open(os.path.join(os.fsencode(str(d)), name), "wb") as f:
        f.write(b"x")
    refused(store, lambda: store.put_files("data", "master", plan_sources("/in/", [str(d)], recursive=True)))


# ------------------------------------------------------------------- refs

ref_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda r, at, ref, c, p: r + at + ref + c + p,
              st.sampled_from(["data", "up", "nope", "", "da ta", "ü"]),
              st.sampled_from(["@", "@@", "", "@:"]),
              st.one_of(st.text(alphabet="0123456789abcdefABCDEF~^", max_size=12), st.sampled_from(["master", "dev", "wip", "master~", "master^^^^^^^", "master~99999999999999999999"]), st.text(max_size=8)),
              st.sampled_from(["", ":", "::"]),
              st.one_of(st.text(max_size=20), hostile_paths())),
)


def _engine_reads(s: Store, text: str):
    try:
        ref = refs.parse(text)
    except DplError:
        return
    r, p = ref.ref_or_default, ref.path or "/"
    for call in (
        lambda: s.resolve_commit(ref.repo, r),
        lambda: s.list_files(ref.repo, r, p),
        lambda: s.list_files(ref.repo, r, p, recursive=True),
        lambda: s.file_row(ref.repo, r, p),
        lambda: s.glob_files(ref.repo, r, p),
        lambda: s.diff_files(ref.repo, r),
        lambda: s.list_commits(ref.repo, ref.ref),
        lambda: s.list_branches(ref.repo),
        lambda: s.inspect_repo(ref.repo),
    ):
        try:
            call()
        except DplError:
            pass


@FAST
@given(ref_text)
def test_malformed_refs_read_nothing_wrong_and_change_nothing(store, text):
    before = snapshot(store)
    _engine_reads(store, text)
    for call in (lambda: store.commits_with_id(text), lambda: store.inspect_job(None, text), lambda: store.inspect_pipeline(text),
                 lambda: store.list_datums("up", text), lambda: store.inspect_datum("up", text, text)):
        try:
            call()
        except DplError:
            pass
    assert snapshot(store) == before


@FAST
@given(st.text(max_size=30))
def test_writes_through_a_ref_that_names_nothing_are_refused(store, ref):
    for repo in ("data", "up"):
        try:
            store.resolve_commit(repo, ref, allow_open=True)
            assume(False)  # a ref to a real commit is not bad input
        except DplError:
            pass
    refused(store, lambda: store.delete_commit("data", ref))
    refused(store, lambda: store.squash_commit("data", ref))
    refused(store, lambda: store.create_branch("data", "fuzzed", ref or "?"))
    refused(store, lambda: store.finish_commit("data", ref or "?"))
    refused(store, lambda: store.delete_branch("data", ref or "?"))
    refused(store, lambda: store.delete_repo(ref or "?"))
    refused(store, lambda: store.delete_pipeline(ref or "?"))


# ------------------------------------------------------------------ specs

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
FIELDS = [("pipeline",), ("pipeline", "name"), ("input",), ("input", "cross"), ("transform",), ("transform", "cmd"),
          ("transform", "env"), ("parallelism_spec", "constant"), ("datum_tries",), ("description",), ("bogus",),
          ("input", "cross", 0, "pfs", "glob"), ("input", "cross", 0, "pfs", "repo"), ("input", "cross", 1, "pfs", "name")]


@st.composite
def bad_specs(draw):
    kind = draw(st.sampled_from(["truncated", "mutated", "deleted", "random", "nested"]))
    text = json.dumps(SPEC)
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "random":
        return json.dumps(draw(json_values))
    if kind == "nested":
        n = draw(st.integers(50, 5000))
        return '{"input": ' + "[" * n + "]" * n + "}"
    spec = json.loads(text)
    path = draw(st.sampled_from(FIELDS))
    node = spec
    for key in path[:-1]:
        node = node[key]
    if kind == "deleted":
        if isinstance(node, dict):
            node.pop(path[-1], None)
    else:
        node[path[-1]] = draw(json_values)
    return json.dumps(spec)


@FAST
@given(bad_specs())
def test_malformed_specs_are_refused_by_name_and_change_nothing(store, text):
    try:
        spec = specs.load_spec(text)
    except DplError as e:
        assert e.message.startswith(("spec", "<spec>")), e.message  # names the field (or the document)
        refused(store, lambda: store.create_pipeline(text))
        refused(store, lambda: store.update_pipeline(text))
        return
    # A mutation that happens to be valid: creating it again must still be refused.
    assume(spec.name == "up")
    refused(store, lambda: store.create_pipeline(text))


# -------------------------------------------------------------- the CLI

cli_text = st.text(alphabet=string.ascii_letters + string.digits + "@:/~^.-_ *?[]üé", min_size=1, max_size=30).filter(lambda t: not t.startswith("-"))


def cli_refused(store, *args, allow_ok=False):
    before = snapshot(store)
    proc = dpl(*args, store=store.root, check=False)
    err = proc.stderr.decode()
    assert "Traceback" not in err
    if not (allow_ok and proc.returncode == 0):
        assert proc.returncode == 1 and err.startswith("error: "), (args, proc.returncode, err)
    assert snapshot(store) == before


@CLI
@given(cli_text)
def test_the_cli_answers_malformed_refs_with_one_error(store, text):
    cli_refused(store, "get-file", text, allow_ok=True)
    try:
        store.resolve_commit("data", text.partition(":")[0].partition("@")[2] or "?")
        assume(False)
    except DplError:
        pass
    cli_refused(store, "delete-commit", text if "@" in text else f"data@{text}")


@CLI
@given(bad_specs())
def test_the_cli_answers_malformed_specs_with_one_error(store, tmp_path_factory, text):
    try:
        specs.load_spec(text)
        assume(False)
    except DplError:
        pass
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(text)
    cli_refused(store, "create-pipeline", path)
    cli_refused(store, "update-pipeline", path)


def test_the_cli_answers_undecodable_arguments_with_one_error(store):
    for args in (["inspect-repo", b"\xff\xfe"], ["get-file", b"data@mas\xffter:/a.txt"], ["inspect-job", b"up@\xff"],
                 ["put-file", b"data@master:/x\xff", str(store.src / "a.txt")], ["delete-branch", b"data@\xff"]):
        cli_refused(store, *[os.fsdecode(a) if isinstance(a, bytes) else a for a in args])
