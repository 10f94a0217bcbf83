"""Data repos against their peers (issue 2): cp, git and DVC on the same data.

    small_files  put-file -r of 100,000 files of ~0.5 KB    vs cp -r, git, dvc add
    big_file     put-file / get-file of a 2 GiB file          vs cp
    list_diff    list-file, diff-file on a 100,000-file commit vs git ls-tree, git diff
    big_head     put-file -r of 1,000,000 files (time, peak memory) vs cp -r, then
                 one 1-file commit on that head vs one into an empty repo
"""

from __future__ import annotations

import os
import shutil

import generated
import harness as h
import peers
from bench_pipelines import flat_files
from harness import Context, measure

BENCHMARKS = {}


def benchmark(fn):
    BENCHMARKS[fn.__name__] = fn
    return fn


def _rm(path) -> None:
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path and os.path.exists(path):
        os.unlink(path)


# ------------------------------------------------------------------ figure 1


@benchmark
def small_files(ctx: Context) -> None:
    n = ctx.sizes["small_files"]
    src, total = generated.small_files(ctx, n)
    sec = ctx.section("repos.small_files", f"put-file -r of {n:,} files of ~0.5 KB ({h.human_bytes(total)})")
    scratch = ctx.scratch("small")

    def fresh(kind):
        return lambda i: os.path.join(scratch, f"{kind}{i}")

    def git_setup(i):
        gitdir = os.path.join(scratch, f"git{i}")
        h.run(["git", "init", "-q", "--bare", gitdir], env=peers.GIT_ENV)
        return gitdir

    def git_cmd(gitdir):
        g = f"git --git-dir={gitdir} --work-tree={src}"
        return {"cmd": f"{g} add -A && {g} commit -q -m bench", "env": peers.GIT_ENV}

    def dvc_setup(i):
        work = os.path.join(scratch, f"dvc{i}")
        os.makedirs(work)
        h.run([ctx.dvc, "init", "-q", "--no-scm"], cwd=work, env=peers.DVC_ENV)
        h.run(["cp", "-r", src, os.path.join(work, "data")])  # dvc adds what is inside its workspace
        return work

    def dpl_setup(i):
        return h.new_store(os.path.join(scratch, f"dpl{i}"), "bench")

    rounds = h.Rounds(ctx.repeat)
    rounds.add("cp", "cp -r", lambda d: ["cp", "-r", src, d], setup=fresh("cp"), teardown=_rm)
    rounds.add("cp_sync", "cp -r && sync  (what dpl's flush costs)", lambda d: f"cp -r {src} {d} && sync",
               setup=fresh("cps"), teardown=_rm)
    rounds.add("git", "git add -A && git commit", git_cmd, setup=git_setup, teardown=_rm)
    if ctx.dvc:
        rounds.add("dvc", "dvc add", lambda w: {"cmd": [ctx.dvc, "add", "-q", "data"], "cwd": w, "env": peers.DVC_ENV},
                   setup=dvc_setup, teardown=_rm)
    rounds.add("dpl", "dpl put-file -r", lambda s: {"cmd": h.dpl_cmd("put-file", "-r", "bench@master", src), "env": {"DPL_STORE": s}},
               setup=dpl_setup, teardown=_rm)
    figures = rounds.run()
    for key, fig in figures.items():
        sec.add(key, fig)
    if not ctx.dvc:
        sec.unavailable("dvc add", ctx.dvc_why)
    cp, git, dvc, dpl = figures["cp"], figures["git"], figures.get("dvc"), figures["dpl"]
    sec.ratio("dpl put-file -r / cp -r", dpl.seconds / cp.seconds, at_most=2)
    sec.info("dpl / git add+commit", f"{dpl.seconds / git.seconds:.2f} x")
    if dvc:
        sec.info("dpl / dvc add", f"{dpl.seconds / dvc.seconds:.2f} x")
    sec.close()


# ------------------------------------------------------------------ figure 2


@benchmark
def big_file(ctx: Context) -> None:
    nbytes = ctx.sizes["big_bytes"]
    src = generated.big_file(ctx, nbytes)
    sec = ctx.section("repos.big_file", f"put-file and get-file -o of one {h.human_bytes(nbytes)} file")
    scratch = ctx.scratch("big")
    stores = []

    def put_setup(i):
        for old in stores:  # keep only the newest store: it serves the get of this round
            _rm(old)
        stores[:] = [h.new_store(os.path.join(scratch, f"dpl{i}"), "bench")]
        return stores[0]

    def get_teardown(dest):
        if os.path.getsize(dest) != nbytes:
            raise h.CommandFailed(f"get-file wrote {os.path.getsize(dest)} bytes, not {nbytes}")
        _rm(dest)

    rounds = h.Rounds(ctx.repeat)
    rounds.add("cp", "cp", lambda d: ["cp", src, d], nbytes=nbytes,
               setup=lambda i: os.path.join(scratch, f"cp{i}.bin"), teardown=_rm)
    rounds.add("put", "dpl put-file", lambda s: {"cmd": h.dpl_cmd("put-file", "bench@master:/big.bin", src), "env": {"DPL_STORE": s}},
               nbytes=nbytes, setup=put_setup)
    rounds.add("get", "dpl get-file -o",
               lambda d: {"cmd": h.dpl_cmd("get-file", "bench@master:/big.bin", "-o", d), "env": {"DPL_STORE": stores[0]}},
               nbytes=nbytes, setup=lambda i: os.path.join(scratch, f"out{i}.bin"), teardown=get_teardown)
    figures = rounds.run()
    cp, put, get = (sec.add(key, figures[key]) for key in ("cp", "put", "get"))
    sec.ratio("dpl put-file throughput / cp", put.throughput / cp.throughput, at_least=0.5)
    sec.ratio("dpl get-file throughput / cp", get.throughput / cp.throughput, at_least=0.5)
    sec.close()


# ------------------------------------------------------------------ figure 3


@benchmark
def list_diff(ctx: Context) -> None:
    n = ctx.sizes["small_files"]
    src, total = generated.small_files(ctx, n)
    sec = ctx.section("repos.list_diff", f"list-file and diff-file on a {n:,}-file commit (one file changed)")
    scratch = ctx.scratch("list")
    rep = max(ctx.repeat, 3) if not ctx.quick else 1
    changed = os.path.join(scratch, "changed.bin")
    with open(changed, "wb") as f:
        f.write(b"a changed file\n")

    # The same two commits in dpl and in git.
    store = h.new_store(os.path.join(scratch, "dpl"), "bench", "flat")
    h.run(h.dpl_cmd("put-file", "-r", "bench@master", src), env={"DPL_STORE": store})
    h.run(h.dpl_cmd("put-file", "bench@master:/d0000/f0000.bin", changed), env={"DPL_STORE": store})
    # The same count in one directory: list-file of the root then prints every file.
    flat = flat_files(ctx, n)
    h.run(h.dpl_cmd("put-file", "-r", "flat@master", flat), env={"DPL_STORE": store})
    h.run(h.dpl_cmd("put-file", "flat@master:/f0000000.txt", changed), env={"DPL_STORE": store})
    gitdir = os.path.join(scratch, "git")
    g = ["git", f"--git-dir={gitdir}", f"--work-tree={src}"]
    h.run(["git", "init", "-q", "--bare", gitdir], env=peers.GIT_ENV)
    h.run(f"{' '.join(g)} add -A && {' '.join(g)} commit -q -m one", env=peers.GIT_ENV)
    # The second commit changes the index only, never the shared source tree.
    h.run(f"blob=$({' '.join(g)} hash-object -w {changed}) && "
          f"{' '.join(g)} update-index --cacheinfo 100644,$blob,d0000/f0000.bin && {' '.join(g)} commit -q -m two",
          env=peers.GIT_ENV)

    env = {"DPL_STORE": store}
    cases = [
        ("list", "dpl list-file REPO@master", h.dpl_cmd("list-file", "bench@master"), g + ["ls-tree", "HEAD"], "git ls-tree HEAD"),
        ("list_r", "dpl list-file -r REPO@master", h.dpl_cmd("list-file", "-r", "bench@master"),
         g + ["ls-tree", "-r", "HEAD"], "git ls-tree -r HEAD"),
        ("diff", "dpl diff-file REPO@master", h.dpl_cmd("diff-file", "bench@master"),
         g + ["diff", "--name-status", "HEAD~1", "HEAD"], "git diff --name-status HEAD~1 HEAD"),
    ]
    flat_cases = [
        ("list_flat", f"dpl list-file FLAT@master ({n:,} files in /)", h.dpl_cmd("list-file", "flat@master")),
        ("diff_flat", "dpl diff-file FLAT@master", h.dpl_cmd("diff-file", "flat@master")),
    ]
    out = os.path.join(scratch, "out.txt")
    with open(out, "wb") as f:  # output to a file, as `dpl list-file ... > out` would
        rounds = h.Rounds(rep)
        rounds.add("floor", "dpl list-repo  (CLI start-up floor)", {"cmd": h.dpl_cmd("list-repo"), "env": env})
        for key, label, cmd, git_cmd, git_label in cases:
            rounds.add(key, label, {"cmd": cmd, "env": env, "stdout": f})
            rounds.add("git_" + key, git_label, {"cmd": git_cmd, "env": peers.GIT_ENV, "stdout": f})
        for key, label, cmd in flat_cases:
            rounds.add(key, label, {"cmd": cmd, "env": env, "stdout": f})
        figures = rounds.run()
    sec.add("floor", figures["floor"])
    for key, label, *_ in cases:
        sec.add(key, figures[key])
        sec.add("git_" + key, figures["git_" + key])
        sec.limit(label, figures[key].seconds, at_most=0.5)
    for key, label, _ in flat_cases:
        sec.add(key, figures[key])
        sec.limit(label, figures[key].seconds, at_most=0.5)
    sec.close()


# -------------------------------------------------------------- figures 4, 5


@benchmark
def big_head(ctx: Context) -> None:
    n = ctx.sizes["head_files"]
    src, total = generated.small_files(ctx, n)
    sec = ctx.section("repos.big_head", f"put-file -r of {n:,} files ({h.human_bytes(total)}), then 1-file commits on that head")
    scratch = ctx.scratch("head")

    sec.add("cp", measure("cp -r", lambda d: ["cp", "-r", src, d], repeat=1,
                          setup=lambda i: os.path.join(scratch, "cp"), teardown=_rm))
    store = h.new_store(os.path.join(scratch, "dpl"), "bench")
    env = {"DPL_STORE": store}
    put = sec.add("put", measure("dpl put-file -r", {"cmd": h.dpl_cmd("put-file", "-r", "bench@master", src), "env": env}, repeat=1))
    sec.limit("dpl put-file -r peak RSS", put.max_rss / (1 << 30), at_most=1, unit="GiB")

    one = os.path.join(scratch, "one.txt")
    with open(one, "wb") as f:
        f.write(b"one more file\n")
    rep = 2 if ctx.quick else max(ctx.repeat, 5)

    def empty_repo(i):
        h.run(h.dpl_cmd("create-repo", f"empty{i}"), env=env)
        return i

    rounds = h.Rounds(rep)
    rounds.add("one_empty", "dpl put-file (1 file, empty repo)",
               lambda i: {"cmd": h.dpl_cmd("put-file", f"empty{i}@master:/one.txt", one), "env": env}, setup=empty_repo)
    rounds.add("one_head", f"dpl put-file (1 file, {n:,}-file head)",
               lambda i: {"cmd": h.dpl_cmd("put-file", f"bench@master:/new/{i}.txt", one), "env": env}, setup=lambda i: i)
    figures = rounds.run()
    empty, onto = sec.add("one_empty", figures["one_empty"]), sec.add("one_head", figures["one_head"])
    sec.ratio(f"1-file commit on {n:,}-file head / empty", onto.seconds / empty.seconds, at_most=3)
    sec.close()
