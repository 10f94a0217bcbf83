"""What every benchmark shares: generated data, timed child processes, peers.

A benchmark times whole commands in child processes, the way a user meets
them: `dpl` is the real console script next to `sys.executable`, so CLI
start-up counts.  Each timed run is preceded by an (untimed) `sync`, so that
no command pays for the writeback of the one before it; `dpl` itself still
pays for its own flush before a commit (its durability guarantee), `cp` and
git do not flush at all.

Scratch space for stores and copies is a temporary directory beside the
data directory (bench/data by default, gitignored), on the same file
system; the data itself is generated.py's, the peers' set-up peers.py's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
DPL = os.path.join(BIN, "dpl")

# Full sizes are the figures of issue 2; quick sizes are a smoke run.
SIZES = {
    "full": {"small_files": 100_000, "big_bytes": 2 << 30, "head_files": 1_000_000, "repeat": 3},
    "quick": {"small_files": 2_000, "big_bytes": 32 << 20, "head_files": 5_000, "repeat": 1},
}


class CommandFailed(RuntimeError):
    pass


@dataclasses.dataclass
class Run:
    seconds: float
    max_rss: int  # bytes, of the child (and any children it waited for)
    # user + system CPU seconds of the child: on a loaded machine the wall
    # time of a short command is mostly waiting for a core, this is not.
    cpu: float = 0.0


@dataclasses.dataclass
class Figure:
    """One measured command: every run of it, summarised by the median."""

    label: str
    runs: list[Run]
    nbytes: int | None = None  # bytes moved, for throughput
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def max_rss(self) -> int:
        return max(r.max_rss for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu for r in self.runs)

    @property
    def throughput(self) -> float | None:
        return self.nbytes / self.seconds if self.nbytes else None

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "runs": [r.seconds for r in self.runs],
            "cpu": self.cpu,
            "max_rss": self.max_rss,
            "bytes": self.nbytes,
            "throughput": self.throughput,
            "note": self.note,
        }


@dataclasses.dataclass
class Ratio:
    label: str
    value: float
    limit: float
    at_most: bool  # True: value <= limit passes; False: value >= limit passes
    unit: str = "x"  # "x" for a ratio, "s" for an absolute time

    @property
    def ok(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def to_dict(self) -> dict:
        return {"label": self.label, "value": self.value, "limit": self.limit,
                "at_most": self.at_most, "unit": self.unit, "ok": self.ok}


class Context:
    """Sizes, directories and the report of one `run.py` invocation."""

    def __init__(self, *, quick: bool, data_dir: str, repeat: int | None = None, metadata: str | None = None):
        self.quick = quick
        self.sizes = dict(SIZES["quick" if quick else "full"])
        if repeat:
            self.sizes["repeat"] = repeat
        self.repeat = self.sizes["repeat"]
        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        self.results: list[dict] = []
        self.dvc: str | None = None  # the dvc executable, when available
        self.dvc_why = ""  # why not, otherwise
        self.metadata = metadata  # a postgresql:// URL: stores keep their metadata there
        self._scratch: list[str] = []
        self._databases: list[str] = []

    # ------------------------------------------------------------ directories

    def scratch(self, name: str) -> str:
        """A fresh directory on the data's file system, removed at the end."""
        path = tempfile.mkdtemp(prefix=f"tmp-{name}-", dir=self.data_dir)
        self._scratch.append(path)
        return path

    def cleanup(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()
        for url in self._databases:
            _postgres(self.metadata, f'DROP DATABASE IF EXISTS "{_database(url)}" WITH (FORCE)')
        self._databases.clear()

    def new_metadata(self) -> str | None:
        """The `dpl init --metadata` URL of a new store: None for SQLite (the
        default), else a fresh database on the `--metadata` server (a store
        owns its database, so two stores never share one)."""
        if not self.metadata:
            return None
        import urllib.parse
        import uuid

        name = f"dpl_bench_{uuid.uuid4().hex[:12]}"
        _postgres(self.metadata, f'CREATE DATABASE "{name}"')
        url = urllib.parse.urlsplit(self.metadata)._replace(path="/" + name).geturl()
        self._databases.append(url)
        return url

    # ---------------------------------------------------------------- report

    def section(self, name: str, title: str) -> "Section":
        return Section(self, name, title)


class Section:
    """The printed (and saved) figures and ratios of one benchmark."""

    def __init__(self, ctx: Context, name: str, title: str):
        self.ctx = ctx
        self.name = name
        self.figures: dict[str, Figure] = {}
        self.ratios: list[Ratio] = []
        self.notes: list[str] = []
        say(f"\n== {name}: {title}")

    def add(self, key: str, fig: Figure) -> Figure:
        self.figures[key] = fig
        runs = " ".join(f"{r.seconds:.3f}" for r in fig.runs)
        extra = f"  {human_rate(fig.throughput)}" if fig.throughput else ""
        note = f"  ({fig.note})" if fig.note else ""
        cpu = f"  cpu {fig.cpu:.3f} s" if fig.cpu else ""
        say(f"  {fig.label:<44} {fig.seconds:8.3f} s{extra}{cpu}  max RSS {human_bytes(fig.max_rss)}"
            f"  [runs: {runs}]{note}")
        return fig

    def unavailable(self, label: str, why: str) -> None:
        self.notes.append(f"{label}: unavailable ({why})")
        say(f"  {label:<44} unavailable: {why}")

    def ratio(self, label: str, value: float, *, at_most: float | None = None, at_least: float | None = None) -> Ratio:
        r = Ratio(label, value, at_most if at_most is not None else at_least, at_most is not None)
        self.ratios.append(r)
        target = f"{'<=' if r.at_most else '>='} {r.limit:g}"
        say(f"  {'ratio ' + label:<44} {value:8.2f} x  target {target:<8} {'OK' if r.ok else 'MISSED'}")
        return r

    def limit(self, label: str, value: float, *, at_most: float, unit: str = "s") -> Ratio:
        """An absolute target (a time in seconds, or another unit)."""
        r = Ratio(label, value, at_most, True, unit)
        self.ratios.append(r)
        say(f"  {'limit ' + label:<44} {value:8.3f} {unit}  target <= {at_most:g} {unit} {'OK' if r.ok else 'MISSED'}")
        return r

    def info(self, label: str, value: str) -> None:
        self.notes.append(f"{label}: {value}")
        say(f"  {label:<44} {value}")

    def close(self) -> None:
        self.ctx.results.append({
            "name": self.name,
            "figures": {k: f.to_dict() for k, f in self.figures.items()},
            "ratios": [r.to_dict() for r in self.ratios],
            "notes": self.notes,
        })


def redact(url: str | None) -> str | None:
    """A URL fit to print: its password replaced by ***."""
    import urllib.parse

    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _database(url: str) -> str:
    import urllib.parse

    return urllib.parse.urlsplit(url).path.lstrip("/")


def _postgres(url: str, sql: str) -> None:
    """One statement on a PostgreSQL server, outside any transaction."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


# ------------------------------------------------------------------ running


def sync() -> None:
    os.sync()


# Peak memory comes from /usr/bin/time: a child forked straight from this
# (big) Python process would report this process's RSS as its own peak,
# because Linux carries the high-water mark across exec.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run(cmd, *, cwd=None, env=None, stdout=None, check=True) -> Run:
    """Run a command (a list, or a string for bash) and time all of it."""
    environ = dict(os.environ, **(env or {}))
    # Python's default: modules are compiled once and cached, as in any pip
    # install.  (A development shell may set PYTHONDONTWRITEBYTECODE; then an
    # editable dpl recompiles all its modules on every call, ~0.1 s.)
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    with tempfile.NamedTemporaryFile("w+") as rss, tempfile.TemporaryFile() as err:
        if TIME:
            argv = [TIME, "-f", "%M", "-o", rss.name, *argv]
        out = stdout if stdout is not None else subprocess.DEVNULL
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if check and proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise CommandFailed(f"{cmd!r} exited {proc.returncode}:\n{tail}")
        lines = rss.read().split()
        max_rss = int(lines[-1]) * 1024 if TIME and lines and lines[-1].isdigit() else usage.ru_maxrss * 1024
    return Run(seconds, max_rss, usage.ru_utime + usage.ru_stime)


def measure(label: str, cmd_or_fn, *, repeat: int, setup=None, teardown=None, nbytes=None, note="", round: int = 0,
            **kw) -> Figure:
    """Run a command `repeat` times, each after its own setup and a sync.

    `cmd_or_fn` is a command, or a function of the setup's result returning
    one (or a dict of `run` arguments), so that each repetition can write to
    a fresh place.  `setup` gets the repetition's number (plus `round`).
    """
    runs = []
    for i in range(repeat):
        state = setup(round + i) if setup else None
        cmd = cmd_or_fn(state) if callable(cmd_or_fn) else cmd_or_fn
        args = dict(kw, **cmd) if isinstance(cmd, dict) else dict(kw, cmd=cmd)
        sync()
        runs.append(run(**args))
        if teardown:
            teardown(state)
    return Figure(label, runs, nbytes=nbytes, note=note)


class Rounds:
    """Several commands measured in rounds (each once per round, in turn),
    so that a machine whose load drifts weighs on all of them alike.

        rounds = Rounds(3)
        rounds.add("cp", "cp -r", lambda d: ["cp", "-r", src, d], setup=...)
        rounds.add("dpl", "dpl put-file -r", ...)
        figures = rounds.run()          # {"cp": Figure, "dpl": Figure}

    `add` takes the arguments of `measure`.
    """

    def __init__(self, repeat: int):
        self.repeat = repeat
        self.specs: list[tuple[str, str, object, dict]] = []

    def add(self, key: str, label: str, cmd_or_fn, **options) -> None:
        self.specs.append((key, label, cmd_or_fn, options))

    def run(self) -> dict[str, Figure]:
        runs: dict[str, list[Run]] = {key: [] for key, _, _, _ in self.specs}
        for i in range(self.repeat):
            for key, label, cmd_or_fn, options in self.specs:
                runs[key].extend(measure(label, cmd_or_fn, repeat=1, round=i, **options).runs)
        return {key: Figure(label, runs[key], nbytes=options.get("nbytes"), note=options.get("note", ""))
                for key, label, _, options in self.specs}


def dpl(*args, store: str, check=True, stdout=None) -> Run:
    return run([DPL, *map(str, args)], env={"DPL_STORE": store}, check=check, stdout=stdout)


def dpl_cmd(*args) -> list[str]:
    return [DPL, *map(str, args)]


def new_store(path: str, *repos: str, metadata: str | None = None) -> str:
    """An empty durable store (the default) with these repos, untimed;
    `metadata` is a PostgreSQL URL to keep its metadata in."""
    run([DPL, "init", path, *(["--metadata", metadata] if metadata else [])])
    for repo in repos:
        run([DPL, "create-repo", repo], env={"DPL_STORE": path})
    return path


def warm_up(ctx: "Context") -> None:
    """One untimed round of the commands the benchmarks time, so that no
    timed run pays for compiling dpl's modules into the bytecode cache."""
    store = new_store(os.path.join(ctx.scratch("warm"), "store"), "warm")
    one = os.path.join(ctx.data_dir, "warm-up.txt")
    with open(one, "w") as f:
        f.write("warm\n")
    for args in (["put-file", "warm@master:/a", one], ["put-file", "warm@master:/b", one], ["list-file", "warm@master"],
                 ["list-file", "-r", "warm@master"], ["diff-file", "warm@master"], ["get-file", "warm@master:/a"]):
        run(dpl_cmd(*args), env={"DPL_STORE": store})
    ctx.cleanup()


# ------------------------------------------------------------------- output


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_rate(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / (1 << 20):7.0f} MiB/s"
