"""Notebooks as steps: a real notebook, run by papermill on a real kernel, in the sandbox and in a container.

Each datum starts a kernel (a few seconds), so every test runs as few datums as
it can; the Docker test builds its image once per machine (tests/services/dockerd.py).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import uuid

import pytest

from dpl.engine.errors import InvalidSpec
from dpl.engine.spec import load_spec
from dplcli import dpl
from readback import outputs

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra: pip install -e '.[notebooks]'")
pytest.importorskip("papermill", reason="the notebooks extra: pip install -e '.[notebooks]'")
pytest.importorskip("ipykernel", reason="the notebooks extra: pip install -e '.[notebooks]'")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def venv_python_first(monkeypatch):
    """Steps run `python3` from the PATH dpl starts with: this venv's, with papermill, as an activated venv has it."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))

PARAMETERS = 'numbers = "numbers"\npfs_out = "out"\nscale = 1\ngreeting = "hi"\nlimit = 100'
SUM = (
    "import json, os\n"
    "paths = [numbers] if os.path.isfile(numbers) else [os.path.join(r, f) for r, _, fs in os.walk(numbers) for f in sorted(fs)]\n"
    "values = [int(open(p).read()) for p in paths]\n"
    "total = sum(values) * scale\n"
    'print("total", total)'
)
WRITE = (
    'with open(os.path.join(pfs_out, "result.json"), "w") as f:\n'
    '    json.dump({"numbers": numbers, "total": total, "greeting": greeting, "pfs_out": pfs_out}, f, sort_keys=True)\n'
    "if total > limit:\n"
    '    raise ValueError(f"total {total} is over the limit {limit}")'
)


def write_notebook(path, *sources: str) -> None:
    """A notebook as Jupyter saves one: a markdown title, a cell tagged `parameters`, then code."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Sum the numbers"), params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))


def project(tmp_path, spec: dict, *sources: str):
    """A spec beside its notebook, as a user lays out a pipeline."""
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    write_notebook(root / "sum.ipynb", *(sources or (SUM, WRITE)))
    path = root / f"{spec['pipeline']['name']}.json"
    path.write_text(json.dumps(spec))
    return root, path


def notebook_spec(name: str, glob: str = "/", **dpl_block) -> dict:
    return {
        "pipeline": {"name": name},
        "transform": {"env": {"GREETING": "hello"}},
        "input": {"pfs": {"repo": "numbers", "glob": glob}},
        "datum_tries": 1,
        "dpl": {"notebook": "sum.ipynb", "parameters": {"scale": 2, "greeting": "$GREETING from ${PPS_PIPELINE_NAME}, $$5"}, **dpl_block},
    }


def put(store, tmp_path, files: dict[str, str], check=True):
    src = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
    for rel, text in files.items():
        (src / rel.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (src / rel.lstrip("/")).write_text(text)
    return dpl("put-file", "numbers@master", src, "-r", store=store, check=check)


def last_job(store, pipeline: str) -> dict:
    return json.loads(dpl("list-job", "-p", pipeline, "-o", "json", store=store).stdout)[0]


def executed(data: bytes):
    return nbformat.reads(data.decode(), as_version=4)


def test_a_notebook_step_gets_spec_and_datum_parameters_and_saves_the_executed_notebook(store, tmp_path):
    dpl("create-repo", "numbers", store=store)
    put(store, tmp_path, {"/a": "3", "/b": "4"})
    _, spec = project(tmp_path, notebook_spec("summed"))
    dpl("create-pipeline", spec, store=store)

    files = outputs(store, "summed")
    assert set(files) == {"/result.json", "/sum.ipynb"}  # what the notebook wrote, and the notebook beside it
    assert json.loads(files["/result.json"]) == {
        "numbers": "/pfs/numbers",  # the datum's input path, under the input's name
        "pfs_out": "/pfs/out",
        "total": 14,  # (3 + 4) * the spec's scale
        "greeting": "hello from summed, $5",  # expanded from the step's environment
    }
    nb = executed(files["/sum.ipynb"])
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "scale = 2" in injected[0].source
    outputs_text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "total 14" in outputs_text
    # No timestamps: the same datum writes the same bytes, so `dpl verify` finds it reproducible.
    assert "start_time" not in files["/sum.ipynb"].decode() and "iopub" not in files["/sum.ipynb"].decode()
    verdict = dpl("verify", "summed@master", "-o", "json", store=store)
    assert "not reproducible" not in verdict.stdout.decode() and verdict.returncode == 0


def test_a_failing_cell_fails_the_datum_and_names_the_cell(store, tmp_path):
    dpl("create-repo", "numbers", store=store)
    put(store, tmp_path, {"/a": "60"})  # 60 * 2 is over the notebook's limit of 100
    _, spec = project(tmp_path, notebook_spec("summed"))
    proc = dpl("create-pipeline", spec, store=store, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    job = last_job(store, "summed")
    assert job["state"] == "failure" and job["failed"] == 1
    # The cell as the notebook was written (index 3: title, parameters, sum, write), its first line, the exception.
    assert ("dpl: notebook sum.ipynb failed at cell index 3 (`with open(os.path.join(pfs_out, \"result.json\"), \"w\") as f:`): "
            "ValueError: total 120 is over the limit 100") in err
    assert "Traceback" in err and "ValueError" in err  # the cell's own traceback comes first, in the log tail


def test_the_notebook_is_the_steps_code_so_an_edit_reruns_its_datums(store, tmp_path):
    # One datum per .txt file, each writing its own result and its own executed notebook.
    write_each = 'open(os.path.join(pfs_out, os.path.basename(numbers)), "w").write(str(total))'
    dpl("create-repo", "numbers", store=store)
    put(store, tmp_path, {"/a.txt": "3"})
    root, spec = project(tmp_path, notebook_spec("summed", glob="/*.txt", notebook_output="runs/${PACH_DATUM_ID}.ipynb"), SUM, write_each)
    dpl("create-pipeline", spec, store=store)
    assert list(last_job(store, "summed")["code"]["files"]) == ["sum.ipynb"]
    assert outputs(store, "summed")["/a.txt"] == b"6"

    # A commit that changes no datum's input: only the edit of the notebook makes /a.txt run again.
    write_notebook(root / "sum.ipynb", SUM.replace("* scale", "* scale * 10"), write_each)
    put(store, tmp_path, {"/README": "not a datum"})
    job = last_job(store, "summed")
    assert (job["processed"], job["skipped"]) == (1, 0)
    why = json.loads(dpl("why", f"summed@{job['id']}", "-o", "json", store=store).stdout)
    assert why["reasons"] == {"code changed: sum.ipynb": 1}
    files = outputs(store, "summed")
    assert files["/a.txt"] == b"60"
    assert [k.rpartition("/")[0] for k in files if k.endswith(".ipynb")] == ["/runs"]


def test_papermill_as_a_documented_cmd_runs_in_the_sandbox(store, tmp_path):
    dpl("create-repo", "numbers", store=store)
    put(store, tmp_path, {"/a": "5"})
    spec = {
        "pipeline": {"name": "by-hand"},
        "transform": {"cmd": ["sh", "-c", 'python3 -m papermill --no-progress-bar sum.ipynb /pfs/out/sum.ipynb -p numbers "$numbers" -p pfs_out /pfs/out -p scale 3']},
        "input": {"pfs": {"repo": "numbers", "glob": "/"}},
        "datum_tries": 1,
    }
    project(tmp_path, spec)
    dpl("create-pipeline", tmp_path / "project" / "by-hand.json", store=store)
    files = outputs(store, "by-hand")
    assert json.loads(files["/result.json"])["total"] == 15
    assert "total 15" in files["/sum.ipynb"].decode()
    assert list(last_job(store, "by-hand")["code"]["files"]) == ["sum.ipynb"]  # named in the cmd, so hashed as code


@pytest.mark.parametrize("change, needle", [
    (lambda s: s["transform"].update(cmd=["python3", "x.py"]), "spec.transform.cmd: a notebook step runs dpl.notebook, so it takes no cmd"),
    (lambda s: s["dpl"].update(notebook_output="../escape.ipynb"), "spec.dpl.notebook_output: '../escape.ipynb' must be a path relative to /pfs/out"),
    (lambda s: s["dpl"].update(notebook="sum.py"), 'spec.dpl.notebook: "sum.py" is not valid here'),
    (lambda s: s["dpl"]["parameters"].update({"not a name": 1}), "spec.dpl.parameters: 'not a name' is not a name a notebook can assign"),
    (lambda s: (s["dpl"].pop("notebook"), s["transform"].update(cmd=["true"])), "spec.dpl.parameters: only a notebook step takes it"),
    (lambda s: (s["transform"].update(secrets=[{"name": "creds", "key": "token", "env_var": "TOKEN"}]),
                s["dpl"]["parameters"].update(auth={"header": "Bearer ${TOKEN}"})),
     "spec.dpl.parameters.auth.header: $TOKEN is a secret, and the executed notebook (an output file) records its parameters"),
])
def test_notebook_specs_are_checked_in_one_sentence(change, needle):
    spec = notebook_spec("checked")
    change(spec)
    with pytest.raises(InvalidSpec) as refused:
        load_spec(json.dumps(spec))
    assert needle in refused.value.message and refused.value.hint


@pytest.mark.docker
def test_a_notebook_step_runs_in_a_container_as_in_the_sandbox(store, tmp_path, docker_engine):
    image = notebook_in_image(docker_engine, tmp_path)
    dpl("create-repo", "numbers", store=store)
    put(store, tmp_path, {"/a": "3", "/b": "4"})
    spec = notebook_spec("contained")
    spec["transform"].update(image=image, working_dir="/work")
    spec["dpl"]["executor"] = "docker"
    path = tmp_path / "contained.json"
    path.write_text(json.dumps(spec))
    try:
        dpl("create-pipeline", path, store=store)
    finally:
        docker_engine.client.images.remove(image, force=True)
    files = outputs(store, "contained")
    assert json.loads(files["/result.json"]) == {"numbers": "/pfs/numbers", "pfs_out": "/pfs/out", "total": 14,
                                                 "greeting": "hello from contained, $5"}
    assert "total 14" in files["/sum.ipynb"].decode()
    assert last_job(store, "contained")["executor"]["kind"] == "docker"
    assert not docker_engine.dpl_containers()


def notebook_in_image(docker_engine, tmp_path) -> str:
    """The notebook test image with sum.ipynb in /work: on Docker the image holds the step's code."""
    base = docker_engine.notebook_image()
    write_notebook(tmp_path / "sum.ipynb", SUM, WRITE)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tmp_path / "sum.ipynb", arcname="work/sum.ipynb")
    container = docker_engine.client.containers.create(base, command=["true"])
    try:
        container.put_archive("/", buf.getvalue())
        tag = f"notebook-step-{uuid.uuid4().hex[:8]}"
        container.commit(repository="dpl-test/notebook-step", tag=tag)
    finally:
        container.remove(force=True)
    return f"dpl-test/notebook-step:{tag}"
