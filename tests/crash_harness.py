"""Fault injection: SIGKILL the `dpl` CLI at random moments, then check that nothing was lost.

Three kinds of work are killed, each in a fresh copy of a prepared store:

* ``put``: ``dpl put-file data@master more/ -r`` into a repo a pipeline reads
  (the command commits, then runs the job the commit starts);
* ``pipeline``: ``dpl create-pipeline spec.json`` (records the spec, creates
  the output repo and the first job, then runs it);
* ``job``: ``dpl run`` of a pending job whose datums take a little time.

After every kill the harness checks that the store is consistent (fsck finds
no problem), that no branch shows a partial commit (every head is the old
commit or a complete new one, file for file), then finishes the work the way a
user would (re-runs a command that did not land, then ``dpl run``) and checks
that every output is byte-identical to an uninterrupted reference run.  For
``job`` it also checks that datums recorded before the kill were not redone.

    python tests/crash_harness.py --trials 200          # on demand
    python tests/crash_harness.py --trials 20 --seed 1  # what CI runs (tests/test_crash.py)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DPL = os.path.join(os.path.dirname(sys.executable), "dpl")
SCENARIOS = ("put", "pipeline", "job")

SPEC = {
    "pipeline": {"name": "upper"},
    "description": "upper-cases every file, a little slowly",
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
    "transform": {
        "cmd": ["sh", "-c", (
            "sleep 0.1; for d in /pfs/data/*; do n=$(basename $d); mkdir -p /pfs/out/$n; "
            "cat $d/* | tr a-z A-Z > /pfs/out/$n/all.up; ls $d > /pfs/out/$n/index; done"
        )]
    },
}


class TrialFailed(AssertionError):
    pass


@dataclass
class Result:
    seed: int = 0
    trials: int = 0
    by_scenario: dict = field(default_factory=dict)  # scenario -> {outcome: count}
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    def count(self, scenario: str, outcome: str) -> None:
        d = self.by_scenario.setdefault(scenario, {})
        d[outcome] = d.get(outcome, 0) + 1

    def summary(self) -> str:
        parts = [f"{self.trials} trials in {self.seconds:.0f}s (seed {self.seed}), {len(self.failures)} failed"]
        for s, d in sorted(self.by_scenario.items()):
            parts.append(f"  {s}: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items())))
        for f in self.failures[:10]:
            parts.append(f"  FAILED {f}")
        return "\n".join(parts)


def dpl(*args, store, check=True, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DPL_STORE=str(store))
    proc = subprocess.run([DPL, *map(str, args)], capture_output=True, env=env, timeout=timeout, cwd=str(store.parent))
    if check and proc.returncode != 0:
        raise TrialFailed(f"dpl {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return proc


def _write_tree(root: Path, rng: random.Random, dirs: int, files: int, big: int = 0) -> None:
    for d in range(dirs):
        (root / f"d{d:02}").mkdir(parents=True, exist_ok=True)
        for i in range(files):
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "x"]) for _ in range(rng.randint(1, 40)))
            (root / f"d{d:02}" / f"f{i:03}.txt").write_text(f"{d}/{i}: {words}\n")
    if big:
        (root / "dbig").mkdir(exist_ok=True)
        (root / "dbig" / "blob.txt").write_bytes(bytes(rng.randrange(97, 123) for _ in range(big)))


def local_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out["/" + str(p.relative_to(root))] = p.read_bytes()
    return out


class Harness:
    """Prepared template stores and the reference outputs, in one work directory."""

    def __init__(self, work: Path, seed: int, verbose: bool = False):
        self.work = work
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.durations: dict[str, float] = {}

    def log(self, *a) -> None:
        if self.verbose:
            print(*a, file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- setup

    def prepare(self) -> None:
        from dpl.engine import Store
        from dpl.engine.files import plan_sources

        rng = random.Random(1234)  # the data is the same for every seed
        self.base_dir, self.more_dir = self.work / "base", self.work / "more"
        _write_tree(self.base_dir, rng, dirs=5, files=20)
        # Some new directories (new datums), some changed files (rerun datums), one
        # bigger file so that the put itself takes a moment.
        _write_tree(self.more_dir, rng, dirs=2, files=60, big=8 << 20)
        self.spec_path = self.work / "spec.json"
        self.spec_path.write_text(json.dumps(SPEC))
        self.expect_base = local_files(self.base_dir)
        self.expect_full = {**self.expect_base, **local_files(self.more_dir)}

        # Template for `pipeline`: input committed, no pipeline yet.
        t = self.work / "t-pipeline" / "store"
        s = Store.init(t, durable=True)
        s.create_repo("data")
        s.put_files("data", "master", plan_sources(None, [str(self.base_dir)], recursive=True))
        s.close()
        # Template for `job`: the pipeline exists and its first job is pending.
        j = self.work / "t-job" / "store"
        shutil.copytree(t.parent, j.parent)
        s = Store.open(j)
        s.create_pipeline(json.dumps(SPEC), source=str(self.spec_path))
        s.close()
        # Template for `put`: the first job ran; the put starts the second.
        p = self.work / "t-put" / "store"
        shutil.copytree(j.parent, p.parent)
        start = time.time()
        dpl("run", store=p)  # the uninterrupted `job` command
        self.durations["job"] = time.time() - start
        self.durations["pipeline"] = self.durations["job"] + 0.5  # the same job, after recording the pipeline

        # The references: uninterrupted runs (and how long a put takes).
        self.ref_base = self._outputs(p)
        store = self._fresh("put", "ref")
        start = time.time()
        dpl(*self._command("put"), store=store)
        self.durations["put"] = time.time() - start
        self.ref_full = self._outputs(store)
        shutil.rmtree(store.parent)
        assert self.ref_full != self.ref_base and len(self.ref_full) > len(self.ref_base)
        self.log("durations", {k: round(v, 2) for k, v in self.durations.items()})

    def _fresh(self, scenario: str, name: str) -> Path:
        dest = self.work / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.work / f"t-{scenario}", dest)
        return dest / "store"

    def _command(self, scenario: str) -> list[str]:
        if scenario == "put":
            return ["put-file", "data@master", str(self.more_dir), "-r"]
        if scenario == "pipeline":
            return ["create-pipeline", str(self.spec_path)]
        return ["run"]

    @staticmethod
    def _outputs(store: Path) -> dict[str, bytes]:
        from dpl.engine import Store

        s = Store.open(store)
        try:
            _, table = s.file_table("upper", "master")
            return {row["path"]: s.read_file("upper", "master", row["path"]) for row in table.select(["path"]).to_pylist()}
        finally:
            s.close()

    # ---------------------------------------------------------------- trials

    def trial(self, n: int, scenario: str, result: Result) -> None:
        store = self._fresh(scenario, "trial")
        env = dict(os.environ, DPL_STORE=str(store))
        delay = self.rng.uniform(0, self.durations[scenario] * 1.05)
        start = time.time()
        proc = subprocess.Popen([DPL, *self._command(scenario)], env=env, cwd=str(store.parent),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=delay)
            outcome = "finished before the kill"
            # The machine got faster (its load changes): follow it, so that kills keep landing mid-work.
            self.durations[scenario] = 0.7 * self.durations[scenario] + 0.3 * (time.time() - start)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            outcome = None
        if outcome and proc.returncode != 0:
            raise TrialFailed(f"uninterrupted command failed: {proc.stderr.read().decode()[-2000:]}")
        proc.stderr.close()
        before = self._datum_records(store) if scenario == "job" else None
        landed = self.check_consistent(store, scenario)
        if n % 5 == 0:  # the command a user would run, now and then (the same check as the API's)
            fsck = dpl("fsck", store=store, check=False)
            if fsck.returncode != 0:
                raise TrialFailed(f"dpl fsck after the kill: {(fsck.stdout + fsck.stderr).decode()[-1000:]}")
        outcome = outcome or {"put": {False: "killed before the commit", True: "killed after the commit"},
                              "pipeline": {False: "killed before the pipeline existed", True: "killed after the pipeline existed"},
                              "job": {False: "killed mid-job", True: "killed after the output landed"}}[scenario][landed]
        self.log(f"trial {n}: {scenario} kill at {delay:.2f}s: {outcome}")
        # Finish the work as a user would.
        if scenario == "put" and not landed:
            dpl("put-file", "data@master", str(self.more_dir), "-r", "--no-wait", store=store)
        if scenario == "pipeline" and not landed:
            dpl("create-pipeline", str(self.spec_path), "--no-wait", store=store)
        dpl("run", store=store)
        self.check_consistent(store, scenario)
        want = self.ref_full if scenario == "put" else self.ref_base
        got = self._outputs(store)
        if got != want:
            diff = sorted(set(got) ^ set(want)) or sorted(p for p in got if got[p] != want[p])
            raise TrialFailed(f"output after resume differs from the reference: {diff[:5]}")
        if before is not None:
            after = self._datum_records(store)
            redone = [d for d, started in before.items() if after.get(d) != started]
            if redone:
                raise TrialFailed(f"datums finished before the kill were run again: {redone[:3]}")
        result.count(scenario, outcome)
        shutil.rmtree(store.parent)

    @staticmethod
    def _datum_records(store: Path) -> dict[str, float]:
        import sqlite3

        db = sqlite3.connect(store / "meta.db")
        try:
            return {r[0]: r[1] for r in db.execute("SELECT datum, started FROM datums WHERE state='success'")}
        finally:
            db.close()

    def check_consistent(self, store: Path, scenario: str) -> bool:
        """fsck is clean and every branch head is a whole commit; returns
        whether the killed command's main effect landed."""
        from dpl.engine import Store
        from dpl.engine.fsck import fsck

        s = Store.open(store)
        try:
            report = fsck(s)
            if not report.ok:
                raise TrialFailed("fsck: " + "; ".join(p.message for p in report.problems[:5]))
            for b in s.db.query("SELECT repo, name, head FROM branches WHERE head IS NOT NULL"):
                commit = s.get_commit(b["repo"], b["head"])
                if commit.state != "finished":
                    raise TrialFailed(f"branch {b['repo']}@{b['name']} points at an open commit")
            opened = s.db.query("SELECT repo, id FROM commits WHERE state='open'")
            if opened:
                raise TrialFailed(f"a killed command left open commits: {[tuple(r) for r in opened]}")
            data = {row["path"]: s.read_file("data", "master", row["path"]) for row in s.file_table("data", "master")[1].select(["path"]).to_pylist()}
            if data == self.expect_full:
                data_landed = True
            elif data == self.expect_base:
                data_landed = False
            else:
                raise TrialFailed(f"data@master is a partial commit ({len(data)} files)")
            if data_landed and scenario != "put":
                raise TrialFailed("data@master changed although nothing was put")
            pipeline = s.db.one("SELECT 1 FROM pipelines WHERE name='upper'") is not None
            output = None
            if pipeline and s.db.one("SELECT head FROM branches WHERE repo='upper' AND name='master' AND head IS NOT NULL"):
                _, table = s.file_table("upper", "master")
                output = {row["path"]: s.read_file("upper", "master", row["path"]) for row in table.select(["path"]).to_pylist()}
                if output not in (self.ref_base, getattr(self, "ref_full", None)):
                    raise TrialFailed(f"upper@master is a partial commit ({len(output)} files)")
            if scenario == "put":
                return data_landed
            if scenario == "pipeline":
                return pipeline
            return output is not None
        finally:
            s.close()


def run(trials: int, seed: int = 0, work: str | None = None, verbose: bool = False, scenarios=SCENARIOS) -> Result:
    """Run `trials` kill trials (cycling through the scenarios); never raises on a failed trial."""
    result = Result(seed=seed)
    start = time.time()
    tmp = Path(work) if work else Path(tempfile.mkdtemp(prefix="dpl-crash-"))
    if work and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=not work)
    try:
        h = Harness(tmp, seed, verbose)
        h.prepare()
        for n in range(trials):
            scenario = scenarios[n % len(scenarios)]
            try:
                h.trial(n, scenario, result)
            except TrialFailed as e:
                result.failures.append(f"trial {n} ({scenario}): {e}")
                h.log(f"trial {n}: {scenario}: FAILED: {e}")
                keep = tmp / f"failed-{n}"
                if (tmp / "trial").exists() and not keep.exists():
                    shutil.move(str(tmp / "trial"), keep)
            result.trials += 1
    finally:
        result.seconds = time.time() - start
        if not work and not result.failures:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--work", help="Keep the stores here (failed trials are kept as failed-N).")
    ap.add_argument("--scenario", choices=SCENARIOS, action="append", help="Only these kinds of work (default: all, in turn).")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    print(f"seed {args.seed}", flush=True)
    result = run(args.trials, args.seed, args.work, args.verbose, tuple(args.scenario or SCENARIOS))
    print(result.summary())
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
