"""Pipeline spec history and code versions, kept with git (pygit2).

Every version of every pipeline spec is a commit in a bare git repository
inside the store (`specs.git`, one file per pipeline), so the history of a
spec and the diff between two versions are plain git.  When a spec file lives
in a git work tree, `code_version` records that repository's HEAD and
whether the tree was dirty, which is the code version a job ran with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

# pygit2 is imported where it is used: every CLI call imports this module,
# few touch the spec history.
_AUTHOR = ("dpl", "dpl@localhost")


class SpecHistory:
    def __init__(self, path: Path):
        import pygit2

        self.path = path
        if not (path / "HEAD").exists():
            # Under the lock too: a process killed half-way through git's init
            # leaves files and a HEAD.lock but no HEAD, and the next init must
            # finish the job instead of tripping over them.
            path.mkdir(parents=True, exist_ok=True)
            with self._locked():
                if not (path / "HEAD").exists():
                    pygit2.init_repository(str(path), bare=True)
        self.repo = pygit2.Repository(str(path))

    @contextlib.contextmanager
    def _locked(self):
        """One writer at a time (two processes would race for HEAD), and no
        stale git lock file: every dpl writer holds this lock, so a `*.lock`
        seen while holding it was left by a killed process, and would
        otherwise refuse every later write."""
        fd = os.open(self.path / "dpl.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for stale in [self.path / "HEAD.lock", *(self.path / "refs" / "heads").glob("*.lock")]:
                stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def record(self, name: str, spec_json: str, message: str) -> str:
        """Commit `spec_json` as `<name>.json`; return the git commit id."""
        import pygit2

        with self._locked():
            parent = None if self.repo.head_is_unborn else self.repo.head.target
            builder = self.repo.TreeBuilder(self.repo[parent].tree) if parent else self.repo.TreeBuilder()
            builder.insert(f"{name}.json", self.repo.create_blob(spec_json.encode()), pygit2.GIT_FILEMODE_BLOB)
            sig = pygit2.Signature(*_AUTHOR, int(time.time()), 0)
            oid = self.repo.create_commit("HEAD", sig, sig, message, builder.write(), [parent] if parent else [])
        return str(oid)

    def remove(self, name: str) -> None:
        with self._locked():
            self._remove(name)

    def _remove(self, name: str) -> None:
        import pygit2

        if self.repo.head_is_unborn:
            return
        parent = self.repo.head.target
        builder = self.repo.TreeBuilder(self.repo[parent].tree)
        if builder.get(f"{name}.json") is None:
            return
        builder.remove(f"{name}.json")
        sig = pygit2.Signature(*_AUTHOR, int(time.time()), 0)
        self.repo.create_commit("HEAD", sig, sig, f"delete pipeline {name}", builder.write(), [parent])

    def diff(self, name: str, old_spec: dict | None, new_spec: dict) -> str:
        """The unified diff of one pipeline's spec between two versions.

        It is made from the specs the metadata holds, not from this store's
        git commits: a store shared by several machines (PostgreSQL
        metadata) has one spec history in its database but a `specs.git` on
        each machine, holding only the versions created there.
        """
        import pygit2

        path = f"{name}.json"
        old_text = json.dumps(old_spec, indent=2, sort_keys=True) if old_spec is not None else ""
        new_text = json.dumps(new_spec, indent=2, sort_keys=True)
        patch = pygit2.Patch.create_from(old_text.encode(), new_text.encode(), old_as_path=path, new_as_path=path)
        return patch.text if patch else ""

def code_version(spec_path: str | None) -> dict:
    """{repo, head, dirty} of the git work tree holding the spec file, if any."""
    import pygit2

    if not spec_path or spec_path == "-":
        return {}
    spec_dir = os.path.dirname(os.path.abspath(spec_path))
    found = pygit2.discover_repository(spec_dir)
    if not found:
        return {"dir": spec_dir}
    repo = pygit2.Repository(found)
    if repo.head_is_unborn:
        return {"dir": spec_dir, "repo": repo.workdir, "head": None, "dirty": True}
    dirty = any(
        flags not in (pygit2.GIT_STATUS_CURRENT, pygit2.GIT_STATUS_IGNORED, pygit2.GIT_STATUS_WT_NEW)
        for flags in repo.status().values()
    )
    return {"dir": spec_dir, "repo": repo.workdir, "head": str(repo.head.target), "dirty": dirty}
