"""Notebooks as steps: a spec's `dpl.notebook`, turned into the command its step runs.

    "dpl": {"notebook": "evaluate.ipynb", "parameters": {"threshold": 0.5, "data": "$training"}}

Such a spec has no `transform.cmd`: `Spec.transform` gives it the one
`command` builds, `python3 -c RUNNER NOTEBOOK CONFIG`, and from there on it
is an ordinary step.  Every executor runs it unchanged (the runner needs
only papermill and a kernel where the step runs: dpl's venv in the local
sandbox, the image on Docker), the notebook's path is a word of the command
so engine/code.py hashes its content into the datum ids, and the generated
command (with the parameters) is part of the transform hash.

What RUNNER does inside the step:
- parameters: one per input, named after it (`-` read as `_`), holding the
  datum's path (`/pfs/iris/iris.csv`); `pfs_out`, where to write; then the
  spec's `dpl.parameters`, whose strings may name the step's environment
  (`$VAR`, `${VAR}`, `$$` for a dollar), but not a secret's env_var (the
  executed notebook records its parameters, and it is an output file);
- kernel: the notebook's own, or `dpl.kernel`; its runtime, IPython and
  matplotlib directories go under a fresh temporary directory, so it starts
  with a read-only or missing HOME (a sandbox, an image's user) and no network;
- output: the executed notebook, with its outputs, at `/pfs/out/` +
  `dpl.notebook_output` (default: the notebook's file name; a template like
  the parameters, e.g. `${PACH_DATUM_inference_JOIN_ON}.ipynb` where several
  datums run it), with papermill's timestamps taken out, so that a rerun
  of the same datum (`dpl verify`) writes the same bytes (without a sandbox
  it records the slot's real directories, which `runner.command` puts in
  place of /pfs/ for any step, so there it differs between runs);
- a failing cell: its traceback, then one last line naming the notebook, the
  cell's index (counted in the notebook as written, from 0), its first
  source line and the exception; exit code 1, so the datum fails (its log
  tail is what a failed job quotes).

The runner is passed as source text, not as a file: nothing needs to be
installed or mounted where the step runs besides papermill itself.
"""

from __future__ import annotations

import json
import re

from .errors import InvalidSpec

OPTIONS = ("notebook", "parameters", "kernel", "notebook_output")
PFS_OUT = "/pfs/out"

RUNNER = r'''
import json, os, re, shutil, sys, tempfile

NOTEBOOK, CONFIG = sys.argv[1], json.loads(sys.argv[2])
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_TAGS = ("papermill-error-cell-tag",)


def say(text):
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def stop(text, hint=""):
    say("dpl: " + text + (" (" + hint + ")" if hint else "") + ".")
    sys.exit(2)


def expand(value, where):
    if isinstance(value, dict):
        return {k: expand(v, where + "." + k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, "%s[%d]" % (where, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def one(m):
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(3)
        if name in CONFIG["secrets"]:
            stop("%s names the secret $%s, which would be saved in the executed notebook" % (where, name),
                 "read it from os.environ in the notebook instead")
        if name not in os.environ:
            stop("%s names $%s, which is not in the step's environment" % (where, name),
                 "set it in transform.env, or name an input")
        return os.environ[name]

    return re.sub(r"\$(?:(\$)|\{(\w+)\}|(\w+))", one, value)


def parameters():
    found = {}
    for name in CONFIG["inputs"]:
        if name in os.environ:
            ident = re.sub(r"\W", "_", name)
            found["_" + ident if ident[0].isdigit() else ident] = os.environ[name]
    found["pfs_out"] = CONFIG["out"]
    found.update(expand(CONFIG["parameters"], "spec.dpl.parameters"))
    return found


def output_path():
    out = os.path.normpath(CONFIG["out"])
    rel = expand(CONFIG["output"], "spec.dpl.notebook_output")
    target = os.path.normpath(os.path.join(out, rel))
    if not target.startswith(out + os.sep):
        stop("spec.dpl.notebook_output %r is not a path inside /pfs/out" % rel, "write a relative path such as evaluated.ipynb")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return target, "/pfs/out/" + os.path.relpath(target, out)


def reproducible(nbformat, path, shown):
    """The executed notebook without what changes on every run: papermill's and nbclient's timestamps,
    and the random ids of the cells papermill adds (or of every cell, in a notebook older than cell ids)."""
    nb = nbformat.read(path, as_version=4)
    with open(NOTEBOOK, encoding="utf-8") as f:
        written = {c.get("id") for c in json.load(f).get("cells", [])} - {None}
    for i, cell in enumerate(nb.cells):
        if cell.get("id") not in written:
            cell["id"] = "injected-parameters" if "injected-parameters" in cell.metadata.get("tags", []) else "dpl-cell-%d" % i
    meta = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration"):
        meta.pop(key, None)
    if "output_path" in meta:
        meta["output_path"] = shown
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
    nbformat.write(nb, path)


def cell_failed(nbformat, error, path):
    """Name the cell as the notebook was written: without the injected parameters (and papermill's error notes)."""
    index, injected = error.cell_index, False
    try:
        cells = [c for c in nbformat.read(path, as_version=4).cells
                 if not set(c.metadata.get("tags", [])) & set(ERROR_TAGS)]
        tags = [c.metadata.get("tags", []) for c in cells[: error.cell_index + 1]]
        injected = "injected-parameters" in tags[-1]
        index -= sum("injected-parameters" in t for t in tags[:-1])
    except Exception:
        pass
    for line in ANSI.sub("", "\n".join(error.traceback or [])).splitlines()[-40:]:
        say(line)
    first = next((line.strip() for line in (error.source or "").splitlines() if line.strip()), "")
    first = first if len(first) <= 80 else first[:77] + "..."
    where = "the parameters dpl injected" if injected else "cell index %d (`%s`)" % (index, first)
    say("dpl: notebook %s failed at %s: %s: %s" % (NOTEBOOK, where, error.ename, ANSI.sub("", str(error.evalue))))
    sys.exit(1)


def main():
    # papermill imports every storage backend it knows (S3, HDFS, GCS, Azure, GitHub) when it starts; a step
    # reads and writes local paths only, so they stay out: a second less per datum where boto3 and pyarrow are
    # installed.  The kernel is another process: the notebook itself imports what it likes.
    for name in ("boto3", "botocore", "pyarrow", "gcsfs", "github", "azure"):
        sys.modules.setdefault(name, None)
    try:
        import nbformat
        import papermill
        from jupyter_client.kernelspec import NoSuchKernel
        from traitlets.config import Config
    except ImportError as e:
        stop("the step's python3 (%s) cannot import papermill (%s)" % (sys.executable, e),
             "run dpl with the venv that has dpl[notebooks] first on its PATH (activate it), "
             "or, on Docker, install papermill and ipykernel in the image")
    if not os.path.isfile(NOTEBOOK):
        stop("the notebook %s is not in the step's working directory %s" % (NOTEBOOK, os.getcwd()),
             "name it relative to the spec's directory (or transform.working_dir)")
    params = parameters()
    target, shown = output_path()
    scratch = tempfile.mkdtemp(prefix="dpl-notebook-")
    # A kernel writes its connection file, IPython its profile, matplotlib its cache: under HOME by default,
    # which a sandbox or an image's user may not be able to write.
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")):
        os.environ.setdefault(var, os.path.join(scratch, sub))
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # The kernel talks to papermill over unix sockets in the scratch directory: no TCP port to pick or
    # to share with other datums, and nothing that needs a network, not even loopback.
    ipc = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(scratch, "kernel")}})
    try:
        papermill.execute_notebook(NOTEBOOK, target, parameters=params, kernel_name=CONFIG["kernel"], progress_bar=False,
                                   stdout_file=sys.stdout, stderr_file=sys.stderr, config=ipc)
    except papermill.PapermillExecutionError as e:
        cell_failed(nbformat, e, target)
    except NoSuchKernel as e:
        stop("there is no Jupyter kernel %r where the step runs" % e.name,
             "install ipykernel there, or set dpl.kernel to an installed kernel (ipykernel's is python3)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reproducible(nbformat, target, shown)
    sys.stdout.flush()


main()
'''


def enabled(raw: dict) -> bool:
    return "notebook" in (raw.get("dpl") or {})


def transform(spec) -> dict:
    """The spec's transform with the command that runs its notebook (the spec itself is left as written)."""
    raw = spec.raw
    options = raw["dpl"]
    t = dict(raw.get("transform") or {})
    config = {
        "inputs": sorted({p.name for p in spec.pfs_inputs()}),
        "out": PFS_OUT,  # a config value, not in RUNNER: without a sandbox the runner rewrites /pfs/ in argv
        "output": options.get("notebook_output") or options["notebook"].rpartition("/")[2],
        "parameters": options.get("parameters") or {},
        "kernel": options.get("kernel"),
        "secrets": sorted(s["env_var"] for s in t.get("secrets", []) if s.get("env_var")),
    }
    t["cmd"] = ["python3", "-c", RUNNER, options["notebook"], json.dumps(config, sort_keys=True, separators=(",", ":"))]
    return t


def check(raw: dict) -> None:
    """What the schema cannot say about a notebook step."""
    options = raw.get("dpl") or {}
    if not enabled(raw):
        extra = [k for k in OPTIONS if k in options]
        if extra:
            raise InvalidSpec(f"spec.dpl.{extra[0]}: only a notebook step takes it.", hint='Add "notebook": "NAME.ipynb" to the dpl block, or remove it.')
        return
    t = raw.get("transform") or {}
    for field in ("cmd", "stdin"):
        if field in t:
            raise InvalidSpec(f"spec.transform.{field}: a notebook step runs dpl.notebook, so it takes no {field}.",
                              hint="Remove it, or remove dpl.notebook and run papermill from cmd yourself (see the README).")
    output = options.get("notebook_output")
    if output is not None and (output.startswith("/") or ".." in re.split(r"[/\\]", output)):
        raise InvalidSpec(f"spec.dpl.notebook_output: {output!r} must be a path relative to /pfs/out.", hint='Write e.g. "evaluated.ipynb".')
    for key in options.get("parameters") or {}:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidSpec(f"spec.dpl.parameters: {key!r} is not a name a notebook can assign.", hint="Use letters, digits and _.")
    secrets = {s["env_var"] for s in t.get("secrets", []) if s.get("env_var")}
    for where, text in _strings(options.get("parameters") or {}, "spec.dpl.parameters"):
        for name in _named(text) & secrets:
            raise InvalidSpec(f"{where}: ${name} is a secret, and the executed notebook (an output file) records its parameters.",
                              hint="Read it with os.environ in the notebook instead.")


def _strings(value, where: str):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def _named(text: str) -> set[str]:
    """The environment variables a parameter string names (`$$` is a dollar, not a name)."""
    return {m.group(2) or m.group(3) for m in re.finditer(r"\$(?:(\$)|\{(\w+)\}|(\w+))", text) if not m.group(1)}

