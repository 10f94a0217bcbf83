"""`RemoteStore`: the methods of the embedded `Store` the CLI and SDK users
call, each one request (or a few, for paged listings) to `dpl serve`.

Answers come back as the embedded Store returns them: commits as `Commit`
objects, listings as rows, refusals as the same `DplError` subclasses with
the same sentence and hint.  So the CLI renders both doors' results with
one code path, and its output is the same.

This module holds the HTTP plumbing and the data side (repos, branches,
commits, files; moving bytes lives in `transfer`); the pipeline side
(pipelines, jobs, provenance, secrets) is `remote_pps.PipelineCalls`, mixed
in; `remote_auth` is `.auth`.  What differs from embedded, by design: jobs
run on the server, and `executor` choices are the server's.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

from . import transfer
from .http import Answer, BadAddress, Broken, Http, Unreachable
from .remote_pps import PipelineCalls, _q
from ..storage import errors as storage_errors, localfile
from ..storage.errors import DplError
from ..storage.metadata.commits import Commit

PAGE = 10_000  # the server's largest page: a 100,000-file listing is ten requests
_COMMIT_FIELDS = ("repo", "id", "branch", "parent", "state", "size", "files", "created", "finished", "description", "origin", "job")


class ServerUnreachable(DplError):
    pass


def _commit(d: dict) -> Commit:
    return Commit(repo=d["repo"], id=d["id"], branch=d["branch"], parent=d["parent"], state=d["state"], layers=[], delta=[],
                  size=d["size"], nfiles=d["files"], created=d["created"], finished=d["finished"], description=d["description"],
                  origin=d["origin"], job=d["job"], extra={k: v for k, v in d.items() if k not in _COMMIT_FIELDS})


def _error(response: Answer) -> DplError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "error" not in body:
        return DplError(f"The server answered {response.status_code} {response.reason_phrase} to {response.method} "
                        f"{response.path}.", hint="See the server's log.")
    from ..engine import auth as auth_errors, errors as engine_errors  # only on a refusal: importing the engine costs ~80 ms

    kind = body.get("type") or ""
    cls = getattr(storage_errors, kind, None) or getattr(engine_errors, kind, None) or getattr(auth_errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, DplError)):
        cls = DplError
    try:
        return cls(body["error"], body.get("hint"))
    except TypeError:  # an error class that takes more than a sentence and a hint
        return DplError(body["error"], body.get("hint"))


class RemoteStore(PipelineCalls):
    """The Store's interface over HTTP."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 300.0):
        from .config import token_for

        self.url = url.rstrip("/")
        token = token or token_for(self.url)  # DPL_TOKEN, or the one `dpl auth login` saved for this address
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self.http = Http(self.url + "/api/v1", headers=headers, timeout=timeout)
        except BadAddress:
            raise DplError(f"{url!r} is not the address of a dpl server.",
                           hint="Give it as http://HOST:PORT or https://HOST:PORT (--address, DPL_ADDRESS or `dpl connect`).") from None
        self.root = self.url  # what messages name as the store's place

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ http

    def _send(self, method: str, path: str, *, params: dict | None = None, json: Any = None, content=None,
              headers: dict | None = None, stream: bool = False) -> Answer:
        try:
            response = self.http.send(method, path, params=params, json=json, content=content, headers=headers, stream=stream)
        except Unreachable as e:
            raise ServerUnreachable(f"Cannot reach the dpl server at {self.url} ({e}).",
                                    hint="Start it with `dpl serve`, or check --address, DPL_ADDRESS and `dpl connect`.") from None
        except Broken as e:
            raise self._broke(method, path, e) from None
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise _error(response)
        return response

    def _broke(self, method: str, path: str, e: Broken) -> ServerUnreachable:
        # Reached, then lost mid-request (the server died or restarted).  Not
        # retried here: a write may have landed, and only the user knows
        # whether sending it again is what they want.
        return ServerUnreachable(f"The connection to the dpl server at {self.url} broke during {method} {path} ({e}).",
                                 hint="A commit lands whole or not at all: check with list-commit once the server is back, "
                                 "then send it again if it is missing.")

    # `route` is positional-only: `path` is also a query parameter of file routes.
    def _get(self, route: str, /, **params) -> Any:
        return self._send("GET", route, params=params).json()

    def _call(self, method: str, route: str, body: dict | None = None, /, **params) -> Any:
        response = self._send(method, route, params=params, json=body)
        return response.json() if response.content else None

    def _all(self, route: str, limit: int | None = None, /, **params) -> list:
        """Every item of a paged listing (at most `limit`)."""
        items: list = []
        cursor = None
        while True:
            want = PAGE if limit is None else min(PAGE, limit - len(items))
            if want <= 0:
                return items
            answer = self._get(route, limit=want, cursor=cursor, **params)
            items.extend(answer["items"])
            cursor = answer["next_cursor"]
            if cursor is None:
                return items

    _as_commit = staticmethod(_commit)  # for the mixed-in pipeline side

    @staticmethod
    def _rows(items: list):
        """A listing as the embedded Store gives it: an Arrow table when long (the CLI prints those column-wise)."""
        if len(items) < 5000:
            return items
        import pyarrow as pa

        return pa.Table.from_pylist(items)

    # ----------------------------------------------------------------- repos

    def create_repo(self, name: str, description: str = "", *, kind: str = "user") -> dict:
        return self._call("POST", "/repos", {"name": name, "description": description})

    def inspect_repo(self, name: str) -> dict:
        return self._get(f"/repos/{_q(name)}")

    def list_repos(self) -> list[dict]:
        return self._all("/repos")

    def delete_repo(self, name: str, *, force: bool = False, dry_run: bool = False) -> dict:
        return self._call("DELETE", f"/repos/{_q(name)}", force=force, dry_run=dry_run)

    @property
    def auth(self):
        """Users, tokens, roles and the audit log, as `Store.auth` offers them (the server checks who may)."""
        from .remote_auth import RemoteAuth

        return RemoteAuth(self)

    @property
    def history(self):
        """What the CLI reaches on the embedded Store's History part (`delete-repo --force` lists before it deletes)."""
        return SimpleNamespace(delete_repo=self.delete_repo)

    def list_branches(self, repo: str) -> list[dict]:
        return self._all(f"/repos/{_q(repo)}/branches")

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> dict:
        return self._call("PUT", f"/repos/{_q(repo)}/branches/{_q(branch)}", {"head": head})

    def delete_branch(self, repo: str, branch: str, *, force: bool = False) -> None:
        self._call("DELETE", f"/repos/{_q(repo)}/branches/{_q(branch)}", force=force)

    def inspect_branch(self, repo: str, branch: str) -> dict:
        return self._get(f"/repos/{_q(repo)}/branches/{_q(branch)}")

    def subscribe_commits(self, repo: str, branch: str, *, new: bool = False, poll: float = 0.5, stop=None):
        """As the embedded Store's: each commit as it becomes the branch's head, polled over HTTP."""
        seen = self.inspect_branch(repo, branch)["head"] if new else None
        while True:
            head = self.inspect_branch(repo, branch)["head"]
            if head is not None and head != seen:
                chain, cid = [], head
                while cid is not None and cid != seen and len(chain) < 10_000:
                    commit = self.get_commit(repo, cid)
                    chain.append(commit)
                    cid = commit.parent
                yield from reversed(chain)
                seen = head
            if stop is not None and stop.wait(poll):
                return
            if stop is None:
                time.sleep(poll)

    # --------------------------------------------------------------- commits

    def resolve_commit(self, repo: str, ref: str | None = None, *, allow_open: bool = False) -> Commit:
        return _commit(self._get(f"/repos/{_q(repo)}/resolve", ref=ref, allow_open=allow_open))

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        return self.inspect_commit(repo, commit_id)

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return _commit(self._get(f"/repos/{_q(repo)}/commits/{_q(ref)}"))

    def list_commits(self, repo: str, branch: str | None = None, *, limit: int | None = None) -> list[Commit]:
        return [_commit(d) for d in self._all(f"/repos/{_q(repo)}/commits", limit, branch=branch)]

    def commits_with_id(self, commit_id: str) -> list[Commit]:
        return [_commit(d) for d in self._get(f"/commits/{_q(commit_id)}")]

    def require_ref(self, text: str):
        """Parse REPO@REF, refusing a path (parsing is local: no request)."""
        from ..engine import refs

        ref = refs.parse(text, path_allowed=False)
        if ref.ref is None:
            raise storage_errors.InvalidRef(f"{text!r} needs a branch or commit.", hint=f"Write {text}@master.")
        return ref

    def start_commit(self, repo: str, branch: str = "master", description: str = "", *, commit_id: str | None = None) -> Commit:
        return _commit(self._call("POST", f"/repos/{_q(repo)}/commits", {"branch": branch, "description": description}))

    def finish_commit(self, repo: str, commit_ref: str, description: str | None = None) -> Commit:
        return _commit(self._call("POST", f"/repos/{_q(repo)}/commits/{_q(commit_ref)}/finish", {"description": description}))

    def delete_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        return self._call("DELETE", f"/repos/{_q(repo)}/commits/{_q(ref)}", force=force)

    def squash_commit(self, repo: str, ref: str, *, force: bool = False) -> dict:
        return self._call("POST", f"/repos/{_q(repo)}/commits/{_q(ref)}/squash", force=force)

    # ----------------------------------------------------------------- files

    def put_files(self, repo: str, branch: str, sources: list, *, append: bool = False, description: str = "", progress=None) -> Commit:
        params = {"branch": branch, "append": append, "description": description}
        if transfer.negotiable(sources):
            return self._put_negotiated(repo, params, sources, progress)
        one = transfer.single_file(sources)
        if one is not None:
            path, local = one
            answer = self._send("PUT", f"/repos/{_q(repo)}/content", params={**params, "path": path},
                                content=transfer.file_body(local, progress), headers={"Content-Type": "application/octet-stream"})
        else:
            answer = self._send("POST", f"/repos/{_q(repo)}/upload", params={**params, "dest": "/"},
                                content=transfer.tar_body(sources, progress), headers={"Content-Type": "application/x-tar"})
        return _commit(answer.json())

    def _put_negotiated(self, repo: str, params: dict, sources: list, progress) -> Commit:
        """Send only the chunks the server lacks, then land the files from their rows (see `transfer`)."""
        files = transfer.chunked(sources, progress)
        ids = list(dict.fromkeys(ref["chunk"].hex() for f in files for ref in f["refs"]))
        missing: set[bytes] = set()
        for i in range(0, len(ids), 50_000):
            answer = self._call("POST", f"/repos/{_q(repo)}/chunks/missing", {"ids": ids[i : i + 50_000]})
            missing.update(bytes.fromhex(h) for h in answer["missing"])
        if missing:
            self._send("POST", f"/repos/{_q(repo)}/chunks", content=transfer.chunk_frames(files, missing),
                       headers={"Content-Type": "application/octet-stream"})
        rows = [{"path": f["path"], "size": f["size"], "hash": f["hash"].hex(),
                 "refs": [[r["chunk"].hex(), r["offset"], r["length"]] for r in f["refs"]]} for f in files]
        commit = _commit(self._call("POST", f"/repos/{_q(repo)}/land", {**params, "files": rows}))
        if progress:
            progress(len(files), sum(f["size"] for f in files))
        return commit

    def put_bytes(self, repo: str, branch: str, files: dict[str, bytes], *, replace: bool = False, description: str = "") -> Commit:
        if replace:
            raise DplError("put_bytes(replace=True) is not served yet.", hint="Delete the other files in a second commit.")
        if len(files) == 1:
            (path, data), = files.items()
            return _commit(self._send("PUT", f"/repos/{_q(repo)}/content", params={"branch": branch, "path": path, "description": description},
                                      content=data).json())
        import io
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, data in files.items():
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return _commit(self._send("POST", f"/repos/{_q(repo)}/upload", params={"branch": branch, "dest": "/", "description": description},
                                  content=buf.getvalue(), headers={"Content-Type": "application/x-tar"}).json())

    def delete_files(self, repo: str, branch: str, paths: list[str], description: str = "") -> Commit:
        return _commit(self._call("DELETE", f"/repos/{_q(repo)}/content", branch=branch, path=list(paths), description=description))

    def list_files(self, repo: str, ref: str | None, path: str = "/", *, recursive: bool = False):
        return self._rows(self._all(f"/repos/{_q(repo)}/files", ref=ref, path=path, recursive=recursive))

    def glob_files(self, repo: str, ref: str | None, pattern: str):
        return self._rows(self._all(f"/repos/{_q(repo)}/glob", ref=ref, pattern=pattern))

    def diff_files(self, repo: str, ref: str | None, other_repo: str | None = None, other_ref: str | None = None):
        return self._rows(self._all(f"/repos/{_q(repo)}/diff", ref=ref, other_repo=other_repo, other_ref=other_ref))

    def inspect_file(self, repo: str, ref: str | None, path: str) -> dict:
        return self._get(f"/repos/{_q(repo)}/inspect-file", ref=ref, path=path)

    def file_row(self, repo: str, ref: str | None, path: str) -> dict:
        """The file's path, size and hash, and the commit it is read from (what `write_file_to` takes)."""
        return self._get(f"/repos/{_q(repo)}/file", ref=ref, path=path)

    def file_pieces(self, repo: str, ref: str | None, path: str):
        response = self._send("GET", f"/repos/{_q(repo)}/content", params={"ref": ref, "path": path}, stream=True)
        try:
            yield from response.iter_bytes(transfer.PIECE)
        except Broken as e:
            raise self._broke("GET", f"/repos/{_q(repo)}/content", e) from None
        finally:
            response.close()

    def read_file(self, repo: str, ref: str | None, path: str, *, start: int = 0, end: int | None = None) -> bytes:
        """A file's bytes, or the bytes [start, end) of it (a Range request)."""
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else None
        return self._send("GET", f"/repos/{_q(repo)}/content", params={"ref": ref, "path": path}, headers=headers).content

    def write_file_to(self, row: dict, fd: int) -> None:
        for piece in self.file_pieces(row["repo"], row["commit"], row["path"]):
            transfer.write_all(fd, piece)

    def export_file(self, row: dict, dest: str) -> str:
        """Write one file to a local path atomically (temp file + rename), as the embedded Store does."""
        return localfile.export(dest, row["path"], lambda fd: self.write_file_to(row, fd))

    def export_dir(self, repo: str, ref: str | None, path: str, dest: str) -> int:
        commit = self.resolve_commit(repo, ref).id  # every file from one commit, even if the branch moves meanwhile
        rows = [r for r in self._all(f"/repos/{_q(repo)}/files", ref=commit, path=path, recursive=True) if r["type"] == "file"]
        strip = 0 if path == "/" else len(path.rstrip("/"))
        for r in rows:
            target = os.path.join(dest, r["path"][strip:].lstrip("/") or os.path.basename(r["path"]))
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            self.export_file({"repo": repo, "commit": commit, "path": r["path"]}, target)
        return len(rows)

    # ---------------------------------------------------------- maintenance

    def _on_server(self, what: str):
        raise DplError(f"{what} runs on the server's machine, not through the API.",
                       hint=f"Run it there, against the store the server opened (e.g. `DPL_ADDRESS=local dpl {what}`).")

    def fsck(self, progress=None):
        self._on_server("fsck")

    def repair(self, *, sources=()):
        self._on_server("fsck --repair")

    def gc(self, *, grace_minutes=None, dry_run=False):
        self._on_server("gc")

    # Issue 15's writes the API does not offer yet: one sentence, not an AttributeError.
    def _not_served(self, what: str):
        raise DplError(f"`dpl {what}` is not offered through a dpl server yet.",
                       hint=f"Run it on the server's machine, against the store the server opened (e.g. `DPL_ADDRESS=local dpl {what} ...`).")

    def copy_file(self, src_repo: str, src_ref: str | None, src_path: str, dst_repo: str, dst_branch: str,
                  dst_path: str | None = None, description: str = "") -> Commit:
        return _commit(self._call("POST", f"/repos/{_q(dst_repo)}/copy", {
            "src_repo": src_repo, "src_ref": src_ref, "src_path": src_path, "branch": dst_branch, "path": dst_path, "description": description}))

    def set_trigger(self, repo: str, branch: str, source: str, *, size: int | None = None, commits: int | None = None,
                    cron: str | None = None, all_of: bool = False) -> dict:
        return self._call("PUT", f"/repos/{_q(repo)}/branches/{_q(branch)}/trigger",
                          {"source": source, "size": size, "commits": commits, "cron": cron, "all_of": all_of})

    def start_transaction(self, *args, **kwargs):
        self._not_served("start-transaction")

    def finish_transaction(self, *args, **kwargs):
        self._not_served("finish-transaction")

    def delete_transaction(self, *args, **kwargs):
        self._not_served("delete-transaction")

    def inspect_transaction(self, *args, **kwargs):
        self._not_served("inspect-transaction")

