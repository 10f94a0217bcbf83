"""Provenance: commit level, global ids, file level both ways, why, graphs, and a property test."""

from __future__ import annotations

import hashlib
import json
import subprocess

import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpl.engine import Store
from dpl.engine.files import plan_sources
from dplcli import dpl

# Each datum writes one file named after its primary input file, holding a
# manifest of every input file it saw with the file's sha256: the ground
# truth that recorded lineage is checked against.
MANIFEST_STEP = [
    "sh", "-c",
    "f=$(find /pfs/$PRIMARY -type f | sort | head -1); [ -n \"$f\" ] || exit 0; "
    "find /pfs -type f ! -path '/pfs/out/*' | sort | while read g; do echo \"$g $(sha256sum < $g | cut -d' ' -f1)\"; done "
    "> /pfs/out/$(basename $f)",
]


def stage(name, primary, input):
    return {"pipeline": {"name": name}, "transform": {"cmd": MANIFEST_STEP, "env": {"PRIMARY": primary}}, "input": input}


def pfs(repo, glob, **kw):
    return {"pfs": {"repo": repo, "glob": glob, **kw}}


DAG = [
    stage("s1", "a", pfs("a", "/*")),
    stage("s2", "s1", {"join": [pfs("s1", "/(*)", join_on="$1"), pfs("b", "/(*)", join_on="$1")]}),
    stage("s3", "s2", {"cross": [pfs("s2", "/*"), pfs("a", "/", name="all")]}),
]


def make_dag(root) -> Store:
    s = Store.init(root)
    s.create_repo("a")
    s.create_repo("b")
    for spec in DAG:
        s.create_pipeline(json.dumps(spec))
    s.run_jobs()
    return s


def put(s: Store, tmp, repo: str, name: str, data: bytes) -> None:
    src = tmp / f"{repo}-{name}-{hashlib.md5(data).hexdigest()}"
    src.write_bytes(data)
    s.put_files(repo, "master", plan_sources(f"/{name}", [str(src)], recursive=False))


def current_files(s: Store, repo: str) -> list[str]:
    if not s.db.one("SELECT head FROM branches WHERE repo=? AND name='master' AND head IS NOT NULL", (repo,)):
        return []
    return s.files_under(repo, "master", "/")["path"].to_pylist()


def check_lineage(s: Store) -> int:
    """Every output file's recorded inputs are exactly the files its datum read."""
    checked = 0
    for repo in ("s1", "s2", "s3"):
        for path in current_files(s, repo):
            manifest = set(s.read_file(repo, "master", path).decode().splitlines())
            tree = s.file_provenance(repo, "master", path)
            recorded = set()
            for inp in tree["inputs"]:
                data = s.read_file(inp["repo"], inp["commit"], inp["path"])
                assert inp["hash"] == xxhash.xxh3_128_hexdigest(data)
                recorded.add(f"/pfs/{inp['input']}{inp['path']} {hashlib.sha256(data).hexdigest()}")
            assert recorded == manifest, (repo, path)
            checked += 1
    return checked


ops = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["k1", "k2", "k3"]), st.one_of(st.none(), st.binary(min_size=1, max_size=8))),
    min_size=1,
    max_size=4,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops)
def test_recorded_lineage_is_exactly_what_each_datum_read(tmp_path_factory, sequence):
    tmp = tmp_path_factory.mktemp("prop")
    s = make_dag(tmp / "store")
    for repo, key, data in sequence:
        if data is None:
            if f"/{key}" not in current_files(s, repo):
                continue
            s.delete_files(repo, "master", [f"/{key}"])
        else:
            put(s, tmp, repo, key, data)
        s.run_jobs()
        assert all(j["state"] == "success" for j in s.list_jobs()), [j["error"] for j in s.list_jobs()]
        check_lineage(s)
    s.close()


def test_provenance_of_a_file_reaches_user_commits_through_every_stage(store, tmp_path):
    for repo in ("a", "b"):
        dpl("create-repo", repo, store=store)
    for spec in DAG:
        path = tmp_path / f"{spec['pipeline']['name']}.json"
        path.write_text(json.dumps(spec))
        dpl("create-pipeline", path, store=store)
    (tmp_path / "x").write_bytes(b"first")
    dpl("put-file", "b@master:/k1", tmp_path / "x", store=store)
    dpl("put-file", "a@master:/k1", tmp_path / "x", store=store)
    (tmp_path / "y").write_bytes(b"other")
    dpl("put-file", "a@master:/k2", tmp_path / "y", store=store)  # s1's k1 output is carried forward now

    tree = json.loads(dpl("provenance", "s3@master:/k1", "-o", "json", store=store).stdout)
    assert tree["datum"]["pipeline"] == "s3"
    names = {(i["input"], i["repo"], i["path"]) for i in tree["inputs"]}
    assert names == {("s2", "s2", "/k1"), ("all", "a", "/k1"), ("all", "a", "/k2")}
    s2 = next(i for i in tree["inputs"] if i["repo"] == "s2")
    assert {(i["repo"], i["path"]) for i in s2["inputs"]} == {("s1", "/k1"), ("b", "/k1")}
    s1 = next(i for i in s2["inputs"] if i["repo"] == "s1")
    [origin] = s1["inputs"]
    assert origin["repo"] == "a" and origin["origin"] == "user"
    first_a = json.loads(dpl("list-commit", "a@master", "-o", "json", store=store).stdout)[-1]["id"]
    assert origin["commit"] == first_a  # carried forward: points at the version it was really made from

    text = dpl("provenance", "s3@master:/k1", store=store).stdout.decode()
    assert "written by datum" in text and "a@" in text and "(user commit)" in text
    dot = dpl("provenance", "s3@master:/k1", "--graph", "dot", store=store).stdout.decode()
    assert dot.startswith("digraph") and "->" in dot
    mermaid = dpl("provenance", "s3@master:/k1", "--graph", "mermaid", store=store).stdout.decode()
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid


def test_subvenance_lists_every_derived_file_and_which_are_on_a_head(store, tmp_path):
    for repo in ("a", "b"):
        dpl("create-repo", repo, store=store)
    for spec in DAG[:2]:
        path = tmp_path / f"{spec['pipeline']['name']}.json"
        path.write_text(json.dumps(spec))
        dpl("create-pipeline", path, store=store)
    (tmp_path / "x").write_bytes(b"one")
    dpl("put-file", "b@master:/k1", tmp_path / "x", store=store)
    dpl("put-file", "a@master:/k1", tmp_path / "x", store=store)
    first = json.loads(dpl("list-commit", "a@master", "-o", "json", store=store).stdout)[0]["id"]
    (tmp_path / "x").write_bytes(b"two")
    dpl("put-file", "a@master:/k1", tmp_path / "x", store=store)

    old = json.loads(dpl("subvenance", f"a@{first}:/k1", "-o", "json", store=store).stdout)
    [s1] = old["derived"]
    assert s1["repo"] == "s1" and s1["path"] == "/k1" and s1["on_branch_head"] is False
    [s2] = s1["derived"]
    assert s2["repo"] == "s2" and s2["on_branch_head"] is False
    new = json.loads(dpl("subvenance", "a@master:/k1", "-o", "json", store=store).stdout)
    assert new["derived"][0]["on_branch_head"] is True and new["derived"][0]["derived"][0]["on_branch_head"] is True


def test_inspect_commit_shows_job_spec_code_executor_and_inputs_to_the_origin(store, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    subprocess.run(["git", "init", "-q", code], check=True)
    spec_path = code / "s1.json"
    spec_path.write_text(json.dumps(DAG[0]))
    subprocess.run(["git", "-C", code, "add", "."], check=True)
    subprocess.run(["git", "-C", code, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec"], check=True)
    head = subprocess.run(["git", "-C", code, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dpl("create-repo", "a", store=store)
    dpl("create-pipeline", spec_path, store=store)
    (tmp_path / "x").write_bytes(b"data")
    dpl("put-file", "a@master:/k1", tmp_path / "x", store=store)
    user_commit = json.loads(dpl("list-commit", "a@master", "-o", "json", store=store).stdout)[0]["id"]

    info = json.loads(dpl("inspect-commit", "s1@master", "-o", "json", store=store).stdout)
    prov = info["provenance"]
    assert info["id"] == user_commit  # global id: the output commit shares the user commit's id
    assert prov["job"]["executor"]["kind"] == "local"
    assert prov["pipeline_version"]["spec"]["pipeline"]["name"] == "s1"
    assert prov["pipeline_version"]["code"]["head"] == head and prov["pipeline_version"]["code"]["dirty"] is False
    assert [(i["repo"], i["commit"]) for i in prov["inputs"]] == [("a", user_commit)]
    assert info["origin_commits"] == [{"repo": "a", "commit": user_commit}]
    text = dpl("inspect-commit", "s1@master", store=store).stdout.decode()
    assert "Provenance:" in text and head[:12] in text and "(user commit)" in text

    wave = json.loads(dpl("list-commit", user_commit, "-o", "json", store=store).stdout)
    assert sorted(c["repo"] for c in wave) == ["a", "s1"]
    assert dpl("wait-commit", user_commit, store=store).returncode == 0


def test_why_gives_each_processed_datum_a_reason(store, tmp_path):
    dpl("create-repo", "a", store=store)
    src = tmp_path / "src"
    src.mkdir()
    for k in ("k1", "k2", "k3"):
        (src / k).write_bytes(k.encode())
    dpl("put-file", "a@master", src, "-r", store=store)
    path = tmp_path / "s1.json"
    path.write_text(json.dumps(DAG[0]))
    dpl("create-pipeline", path, store=store)
    (src / "k1").write_bytes(b"changed")
    (src / "k4").write_bytes(b"new")
    dpl("put-file", "a@master", src, "-r", store=store)
    job = json.loads(dpl("list-job", "-p", "s1", "-o", "json", store=store).stdout)[0]
    why = json.loads(dpl("why", f"s1@{job['id']}", "-o", "json", store=store).stdout)
    assert why["reasons"] == {"changed content: a:/k1": 1, "new input": 1} and why["skipped"] == 2
    info = json.loads(dpl("inspect-job", f"s1@{job['id']}", "-o", "json", store=store).stdout)
    assert info["why"]["skipped"] == 2 and info["processed"] == 2
