"""Datums exactly as Pachyderm's worker makes them (issue 13).

The reference is Pachyderm's own source: `src/server/worker/datum/worker.go`
(processPFSTask, processKeyTask, processMergeTask), `ppsutil.validateNames`,
`worker/driver.UserCodeEnv`, `datum.handleSymlinks`, and the glob library
`github.com/pachyderm/ohmyglob`.  Most cases cut datums through the engine's
Python API with no store (fast); a few run a real pipeline where the
behaviour is what a user sees (outputs, environment, `dpl glob-file`).
"""

from __future__ import annotations

import json
import os
import re

import pytest
import xxhash

from dpl.engine import Store, datums, ohmyglob
from dpl.engine.errors import BadOutput, InvalidSpec
from dpl.engine.spec import load_spec
from dpl.engine.workspace import collect
from dpl.storage import index
from dpl.storage.errors import DplError
from dpl.storage.memory import MemoryChunkStore
from dplcli import dpl
from readback import outputs


def table(files: dict[str, bytes]):
    paths = sorted(files)
    return index.make_table(paths, [len(files[p]) for p in paths], [xxhash.xxh3_128_digest(files[p]) for p in paths], [[] for _ in paths])


def spec_of(input_: dict, **extra):
    return {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "input": input_, **extra}


def cut(input_: dict, repos: dict[str, dict[str, bytes]]):
    """The DatumSet the engine builds for `input_` over these repos (each at commit `c-<repo>`)."""
    spec = load_spec(json.dumps(spec_of(input_)))
    pinned = [datums.pin(p, f"c-{p.repo}", table(repos[p.repo])) for p in spec.pfs_inputs()]
    return datums.build(spec, pinned, "salt")


def seen(dset) -> list[list[str]]:
    """What each datum shows its step, as sorted /pfs paths (one list per datum, sorted)."""
    out = []
    for i in range(len(dset)):
        task = dset.task(i, "job", "p")
        out.append(sorted(f"/pfs/{inp.name}{row['path']}" for inp in task.inputs for row in inp.files))
    return sorted(out)


def pfs(repo, glob="/*", **kw):
    return {"pfs": {"repo": repo, "glob": glob, **kw}}


# ------------------------------------------------------------------ globs


def test_glob_double_star_makes_every_file_and_directory_its_own_datum():
    files = {"/a.csv": b"1", "/d/x.csv": b"2", "/d/y/z.csv": b"3"}
    dset = cut(pfs("data", "/**"), {"data": files})
    assert dset.keys() == ["data:/a.csv", "data:/d", "data:/d/x.csv", "data:/d/y", "data:/d/y/z.csv"]
    # /d/y and /d/y/z.csv hold the same single file: the matched path keeps them two datums.
    assert len(set(dset.ids)) == 5
    # a file matched as itself keeps the id it has under /*: switching glob (or upgrading) reruns only directories
    assert dset.ids[0] == cut(pfs("data", "/*"), {"data": files}).ids[0]
    assert seen(dset) == sorted([["/pfs/data/a.csv"], ["/pfs/data/d/x.csv", "/pfs/data/d/y/z.csv"], ["/pfs/data/d/x.csv"],
                                 ["/pfs/data/d/y/z.csv"], ["/pfs/data/d/y/z.csv"]])


def test_fixed_depth_globs_keep_their_datum_ids():
    # Upgrading must not reprocess every pipeline: only a directory matched by a glob whose matches nest names its path in the id.
    files = {"/a.csv": b"1", "/d/x.csv": b"2"}
    dset = cut(pfs("data", "/*"), {"data": files})
    row = {p: xxhash.xxh3_128_digest(b"data\0" + p.encode() + b"\0" + xxhash.xxh3_128_digest(files[p])) for p in files}
    assert dset.keys() == ["data:/a.csv", "data:/d"]
    assert dset.ids == [xxhash.xxh3_128_digest(b"salt" + row["/a.csv"]), xxhash.xxh3_128_digest(b"salt" + row["/d/x.csv"])]


# Vectors from ohmyglob's own tests (extglob_test.go, capture_test.go), no separator.
OHMYGLOB_MATCHES = [
    (True, "*.(a|b)", "a.a.a"), (False, "*.(a|b)", "a.bb"), (True, "?(a*|b)", "ax"), (False, "(a+|b)*", "zz"),
    (True, "(a|d).(a|b)*", "a.bb"), (True, "@(ab|a*(b))*(c)d", "abbcd"), (False, "@(b+(c)d|e+(f)g?|?(h)i@(j|k))", "egz"),
    (True, "*(@(a))a@(c)", "aac"), (False, "*(@(a))a@(c)", "baaac"), (True, "*.+(b|d)", "d.a.d"), (False, "*.+(b|d)", "a."),
    (True, "!(*.a|*.b|*.c)", "a.d"), (False, "!(*.a|*.b|*.c)", "a.b"), (True, "*(a|b\\[)", "b["), (True, "[!a]*", "bob"),
    (False, "[a-z]", "A"), (True, "[[:alpha:]]", "q"), (True, "{cat,bat,[fr]at}", "rat"), (True, "a@b", "a@b"),
]


@pytest.mark.parametrize("should, pattern, fixture", OHMYGLOB_MATCHES)
def test_glob_syntax_matches_as_ohmyglob_does(should, pattern, fixture):
    assert bool(re.match(rf"\A(?:{ohmyglob.translate(pattern, '').body})\Z", fixture)) is should


@pytest.mark.parametrize("pattern, fixture, template, expected", [
    ("name=(*)/year=(*)/(*).dat", "name=adele/year=2016/photos.dat", "$3 of $1 from $2", "photos of adele from 2016"),
    ("name=(*)", "name=adele", "${1}1", "adele1"),
    ("name=(*)", "name=adele", "$$1", "$1"),
    ("name=(*)/year=(*)/(*).dat", "name=adele/year=2016/photos.dat", "$0", "name=adele/year=2016/photos.dat"),
    ("name=!(adele)/year=(2?1(?))/(*).dat", "name=roxanne/year=2514/puzzle.dat", "$1 from the $3th year, a $4", "roxanne from the 4th year, a puzzle"),
    ("test/a*(a|b)/x.go", "test/a/x.go", "[$1]", "[]"),
])
def test_join_keys_are_filled_as_ohmyglob_replace_does(pattern, fixture, template, expected):
    t = ohmyglob.translate(pattern, "")
    m = re.match(rf"\A(?:{t.body})\Z", fixture)
    assert ohmyglob.fill(template, [fixture, *(g or "" for g in m.groups())]) == expected


def test_alternation_and_extglobs_cut_datums():
    files = {f"/{n}": b"x" for n in ["a-1.csv", "b-2.csv", "c-3.csv", "a.txt", "ab.txt", "abab.txt", "b.txt", "x.log", "d/q.csv"]}
    cases = {
        "/(a|c)-(*).csv": ["/a-1.csv", "/c-3.csv"],
        "/@(a|b).txt": ["/a.txt", "/b.txt"],
        "/+(ab).txt": ["/ab.txt", "/abab.txt"],
        "/*(ab).txt": ["/ab.txt", "/abab.txt"],
        "/?(a)b.txt": ["/ab.txt", "/b.txt"],
        "/!(*.txt|*.csv)": ["/d", "/x.log"],
        "/{a,b}-*.csv": ["/a-1.csv", "/b-2.csv"],
    }
    for pattern, expected in cases.items():
        assert [k.partition(":")[2] for k in cut(pfs("data", pattern), {"data": files}).keys()] == expected, pattern
    # the captures of an alternation feed join_on
    dset = cut({"join": [pfs("data", "/(a|c)-(*).csv", join_on="$2"), pfs("data", "/(*).log", join_on="$1", name="log")]},
               {"data": files | {"/3.log": b"y"}})
    assert seen(dset) == [["/pfs/data/c-3.csv", "/pfs/log/3.log"]]


def test_glob_file_reads_extglobs(store, tmp_path):
    s = Store.open(store)
    s.create_repo("data")
    s.put_bytes("data", "master", {f"/{n}": b"x" for n in ("a-1.csv", "b-2.csv", "c-3.csv", "notes.txt")})
    s.close()

    def paths(pattern):
        return [e["path"] for e in json.loads(dpl("glob-file", f"data@master:{pattern}", "-o", "json", store=store).stdout)]
    assert paths("/(a|c)-(*).csv") == ["/a-1.csv", "/c-3.csv"]
    assert paths("/!(*.csv)") == ["/notes.txt"]
    assert paths("/+([a-b])-*") == ["/a-1.csv", "/b-2.csv"]


# ------------------------------------------------------------------- join


def test_join_of_three_keeps_only_the_outer_inputs_of_a_partial_key():
    repos = {
        "a": {"/1.a": b"a1", "/2.a": b"a2", "/3.a": b"a3"},
        "b": {"/1.b": b"b1", "/2.b": b"b2", "/5.b": b"b5"},
        "c": {"/1.c": b"c1", "/3.c": b"c3", "/4.c": b"c4"},
    }
    join = {"join": [pfs("a", "/(*).a", join_on="$1", outer_join=True), pfs("b", "/(*).b", join_on="$1"),
                     pfs("c", "/(*).c", join_on="$1", outer_join=True)]}
    assert seen(cut(join, repos)) == sorted([
        ["/pfs/a/1.a", "/pfs/b/1.b", "/pfs/c/1.c"],  # every input has key 1
        ["/pfs/a/2.a"],  # c lacks 2: b (not outer) drops out, a stays
        ["/pfs/a/3.a", "/pfs/c/3.c"],
        ["/pfs/c/4.c"],  # only c has 4, and it is outer; 5 is only in b, which is not
    ])


def test_join_on_may_be_omitted_and_then_joins_on_the_empty_key():
    repos = {"a": {"/1": b"x", "/2": b"y"}, "b": {"/p": b"z"}}
    assert load_spec(json.dumps(spec_of({"join": [pfs("a"), pfs("b")]})))  # accepted, as by Pachyderm
    assert seen(cut({"join": [pfs("a"), pfs("b")]}, repos)) == [["/pfs/a/1", "/pfs/b/p"], ["/pfs/a/2", "/pfs/b/p"]]
    # one side keyed, the other not: only a unit whose key fills to "" meets it
    mixed = {"join": [pfs("a", "/(*)", join_on="$1"), pfs("b")]}
    assert seen(cut(mixed, repos)) == []
    with pytest.raises(InvalidSpec, match=r"spec.input.join\[0\].pfs.join_on: \$2 refers to a capture group"):
        load_spec(json.dumps(spec_of({"join": [pfs("a", "/(*)", join_on="$2"), pfs("b")]})))


def test_join_takes_any_input_as_a_child():
    repos = {"a": {"/1-x": b"1", "/2-y": b"2"}, "b": {"/1": b"3", "/2": b"4"}, "c": {"/k": b"5"}}
    # a cross as a join child: its datums are taken apart and each input keyed on its own join_on
    inp = {"join": [{"cross": [pfs("a", "/(*)-*", join_on="$1"), pfs("c", "/")]}, pfs("b", "/(*)", join_on="$1")]}
    got = seen(cut(inp, repos))
    assert ["/pfs/a/1-x", "/pfs/b/1"] in got and ["/pfs/a/2-y", "/pfs/b/2"] in got


# ------------------------------------------------------------------ group


def test_group_over_a_join():
    repos = {
        "a": {"/1-x.txt": b"1", "/2-x.txt": b"2", "/3-y.txt": b"3"},
        "b": {"/1-x.json": b"4", "/2-y.json": b"5", "/3-y.json": b"6"},
    }
    inner = {"join": [pfs("a", "/(*)-(*).txt", join_on="$1", group_by="$2"), pfs("b", "/(*)-(*).json", join_on="$1", group_by="$2")]}
    assert seen(cut({"group": [inner]}, repos)) == [
        ["/pfs/a/1-x.txt", "/pfs/a/2-x.txt", "/pfs/b/1-x.json"],
        ["/pfs/a/3-y.txt", "/pfs/b/2-y.json", "/pfs/b/3-y.json"],
    ]


def test_group_over_a_cross_and_with_group_by_omitted():
    repos = {"a": {"/1-x": b"1", "/2-y": b"2"}, "c": {"/k": b"5"}}
    # the cross's inputs are keyed one by one: c has no group_by, so it is alone under the empty key
    inp = {"group": [{"cross": [pfs("a", "/(*)-(*)", group_by="$2"), pfs("c", "/")]}]}
    assert seen(cut(inp, repos)) == [["/pfs/a/1-x"], ["/pfs/a/2-y"], ["/pfs/c/k"]]
    assert seen(cut({"group": [pfs("a")]}, repos)) == [["/pfs/a/1-x", "/pfs/a/2-y"]]


# ------------------------------------------------------------------ union


def test_union_children_may_share_a_name():
    repos = {"a": {"/1": b"x", "/2": b"y"}, "b": {"/p": b"z"}}
    union = {"union": [pfs("a", name="in"), pfs("b", name="in")]}
    assert seen(cut(union, repos)) == [["/pfs/in/1"], ["/pfs/in/2"], ["/pfs/in/p"]]
    # the same input twice is the same datums, kept once (Pachyderm keys datums by id)
    assert len(cut({"union": [pfs("a"), pfs("a", "/*")]}, repos)) == 2
    # but a name inside a union may not be used outside it, nor twice in a cross
    for bad in ({"cross": [union, pfs("a", name="in")]}, {"cross": [pfs("a", name="in"), pfs("b", name="in")]}):
        with pytest.raises(InvalidSpec, match="the input name 'in' is used twice"):
            load_spec(json.dumps(spec_of(bad)))


# --------------------------------------------------------------- environment


def test_datum_environment_names_commit_join_and_group_keys():
    repos = {"a": {"/1-x.txt": b"1"}, "b": {"/1-x.json": b"2"}}
    dset = cut({"join": [pfs("a", "/(*)-(*).txt", join_on="$1", group_by="$2"), pfs("b", "/(*)-*.json", join_on="$1")]}, repos)
    (env,) = [dset.task(i, "job", "p").env for i in range(len(dset))]
    assert env["a"] == "/pfs/a/1-x.txt" and env["a_COMMIT"] == "c-a" and env["b_COMMIT"] == "c-b"
    assert env["PACH_DATUM_a_JOIN_ON"] == "1" and env["PACH_DATUM_b_JOIN_ON"] == "1"
    assert env["PACH_DATUM_a_GROUP_BY"] == "x" and "PACH_DATUM_b_GROUP_BY" not in env  # unset when empty, as Pachyderm does


# ----------------------------------------------------------- end to end


def run_pipeline(root, repos: dict[str, dict[str, bytes]], spec: dict) -> Store:
    s = Store.init(root)
    for repo, files in repos.items():
        s.create_repo(repo)
        s.put_bytes(repo, "master", files)
    s.create_pipeline(json.dumps(spec))
    s.run_jobs()
    return s


def test_every_double_star_match_keeps_its_output(tmp_path):
    step = ["sh", "-c", 'echo "$data" > "/pfs/out/$(echo "$data" | tr / _)"']
    s = run_pipeline(tmp_path / "store", {"data": {"/d/y/z.csv": b"1", "/a.csv": b"2"}}, spec_of(pfs("data", "/**"), transform={"cmd": step}))
    try:
        assert sorted(outputs(s, "p")) == ["/_pfs_data_a.csv", "/_pfs_data_d", "/_pfs_data_d_y", "/_pfs_data_d_y_z.csv"]
    finally:
        s.close()


def test_step_environment_in_a_join(tmp_path):
    step = ["sh", "-c", 'echo "$a_COMMIT $PACH_DATUM_a_JOIN_ON $PACH_DATUM_b_GROUP_BY" > /pfs/out/env-$PACH_DATUM_a_JOIN_ON']
    inp = {"join": [pfs("a", "/(*).txt", join_on="$1"), pfs("b", "/(*)-(*).json", join_on="$1", group_by="$2")]}
    s = run_pipeline(tmp_path / "store", {"a": {"/7.txt": b"1"}, "b": {"/7-q.json": b"2"}}, spec_of(inp, transform={"cmd": step}))
    try:
        head = s.resolve_commit("a", "master").id
        assert outputs(s, "p") == {"/env-7": f"{head} 7 q\n".encode()}
    finally:
        s.close()


SHUFFLE = """
cd /pfs/out
ln -s /pfs/data/f.txt abs_file      # Pachyderm's shuffle example: a link into the input
ln -s ../data/d rel_dir             # a relative link to an input directory
ln -s /pfs/empty/f.txt empty_file   # empty_files: the stored file, not the empty local one
ln -s /pfs/empty/d empty_dir
mkdir own && echo mine > own/m && ln -s own own_link
"""


@pytest.mark.parametrize("executor", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_symlinks_in_pfs_out_store_their_targets(tmp_path, request, executor):
    # Docker keeps out/ beside pfs/ on the host: `../data/d` must still mean /pfs/data/d.
    transform = {"cmd": ["sh", "-c", SHUFFLE]}
    if executor == "docker":
        transform["image"] = request.getfixturevalue("docker_engine").images["busybox"]
    files = {"/f.txt": b"file", "/d/x.txt": b"dx", "/d/e/y.txt": b"dy"}
    inp = {"cross": [pfs("data", "/"), pfs("data", "/", name="empty", empty_files=True)]}
    s = run_pipeline(tmp_path / "store", {"data": files}, spec_of(inp, transform=transform, dpl={"executor": executor}))
    try:
        assert outputs(s, "p") == {
            "/abs_file": b"file", "/rel_dir/e/y.txt": b"dy", "/rel_dir/x.txt": b"dx",
            "/empty_dir/e/y.txt": b"dy", "/empty_dir/x.txt": b"dx", "/empty_file": b"file",
            "/own/m": b"mine\n", "/own_link/m": b"mine\n",
        }
    finally:
        s.close()


@pytest.mark.parametrize("make, needle", [
    (lambda out: os.symlink("/pfs/data/nope", out / "bad"), "/pfs/out/bad is a symbolic link to /pfs/data/nope, which does not exist"),
    (lambda out: os.symlink("..", out / "sub" / "up"), "/pfs/out/sub/up is a symbolic link to .., which contains it: a loop"),
    (lambda out: os.mkfifo(out / "pipe"), "/pfs/out/pipe is a named pipe"),
    # dpl reads outputs outside the sandbox: a link must not be a way to the host's files
    (lambda out: os.symlink("/etc", out / "host"), "/pfs/out/host is a symbolic link to /etc, which is outside /pfs"),
    (lambda out: (os.symlink("/", out / "sub" / "root"), os.symlink("sub/root/etc", out / "chain")),
     "/pfs/out/chain is a symbolic link to sub/root/etc, which is outside /pfs"),
])
def test_collect_names_what_it_cannot_store(tmp_path, make, needle):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "ok").write_bytes(b"ok")
    make(out)
    with pytest.raises(BadOutput) as e:
        collect(MemoryChunkStore(), str(out), pfs_map={"/pfs/data": str(tmp_path / "data"), "/pfs/out": str(out)})
    assert needle in e.value.message


def test_a_dangling_link_fails_the_job_naming_it(tmp_path):
    step = ["sh", "-c", "echo ok > /pfs/out/ok; ln -s /pfs/data/gone /pfs/out/dangling"]
    try:
        s = run_pipeline(tmp_path / "store", {"data": {"/f": b"1"}}, spec_of(pfs("data"), transform={"cmd": step}, datum_tries=1))
        failures = [j for j in s.list_jobs("p") if j.get("state") != "success"]
        message = json.dumps(failures)
        s.close()
    except DplError as e:
        message = e.message
    assert "/pfs/out/dangling is a symbolic link to /pfs/data/gone, which does not exist" in message


def test_collect_resolves_links_where_the_step_saw_them(tmp_path):
    # Docker's layout: the host keeps out/ beside pfs/, yet `../data/x` in /pfs/out means /pfs/data/x.
    pfs_dir, out = tmp_path / "pfs-1", tmp_path / "out-1"
    (pfs_dir / "data" / "d").mkdir(parents=True)
    (pfs_dir / "data" / "d" / "x").write_bytes(b"local x")
    (pfs_dir / "lazy").mkdir()
    (pfs_dir / "lazy" / "big").write_bytes(b"")  # an empty_files input's local copy
    out.mkdir()
    os.symlink("../data/d", out / "rel")
    os.symlink("/pfs/lazy/big", out / "big")
    stored = {"path": "/big", "size": 123, "hash": b"h" * 16, "refs": [{"chunk": b"c" * 16, "offset": 0, "length": 123}]}
    inputs = [datums.DatumInput("lazy", "data", "c1", "/", [stored], empty_files=True)]
    pfs_map = {"/pfs/data": str(pfs_dir / "data"), "/pfs/lazy": str(pfs_dir / "lazy"), "/pfs/out": str(out)}
    rows = collect(MemoryChunkStore(), str(out), pfs_map=pfs_map, inputs=inputs).to_pylist()
    assert [(r["path"], r["size"]) for r in rows] == [("/big", 123), ("/rel/x", 7)]
    assert rows[0]["refs"] == stored["refs"]  # the stored file itself: no bytes read, as Pachyderm copies it


def test_a_union_of_inputs_sharing_a_name_runs(tmp_path):
    step = ["sh", "-c", 'cp /pfs/in/* /pfs/out/']
    union = {"union": [pfs("a", name="in"), pfs("b", name="in")]}
    s = run_pipeline(tmp_path / "store", {"a": {"/1": b"x", "/2": b"y"}, "b": {"/p": b"z"}}, spec_of(union, transform={"cmd": step}))
    try:
        assert outputs(s, "p") == {"/1": b"x", "/2": b"y", "/p": b"z"}
    finally:
        s.close()
