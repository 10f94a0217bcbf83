"""Running a mount, and reaching a running one: `dpl mount`, `dpl mount
--commit`, `dpl unmount`.

A mount runs in the foreground, in the process that made it, until it is
unmounted: Ctrl-C and SIGTERM reach libfuse's own handlers, which end the
loop and unmount; `fusermount3 -u` ends it from outside.  Either way the
loop returns to `run`, which lands a --write mount's changes before the
process exits.

A running mount listens on a Unix socket named after its directory's real
path (in a per-user directory under the temp dir), so that `dpl mount
--commit DIR` and `dpl unmount DIR` can ask it to land its changes and
report the commit, or its refusal, in the caller's terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import suppress

from . import access
from .mount import FUSE_MISSING, DplMount, MountRefused, ReadOnlyMount
from ..storage.errors import DplError


def check_dir(where: str) -> str:
    """The real path of an empty directory to mount on, or the refusal."""
    if not os.path.exists(where):
        raise MountRefused(f"{where} does not exist, so nothing can be mounted there.", hint=f"Create it first: mkdir -p {where}")
    if not os.path.isdir(where):
        raise MountRefused(f"{where} is not a directory, so nothing can be mounted there.", hint="Mount on an empty directory.")
    if os.path.ismount(where):
        raise MountRefused(f"{where} is a mount point already.", hint=f"Unmount it first: dpl unmount {where}")
    if os.listdir(where):
        raise MountRefused(f"{where} is not empty, and a mount would hide what it holds.", hint="Mount on an empty directory.")
    return os.path.realpath(where)


def require_fuse() -> None:
    if FUSE_MISSING is not None:
        raise MountRefused(f"FUSE cannot be used here: {FUSE_MISSING}.",
                           hint="Install libfuse3 (apt-get install fuse3) and mfusepy (pip install 'dpl[mount]').")
    if not os.path.exists("/dev/fuse"):
        raise MountRefused("FUSE cannot be used here: /dev/fuse does not exist.",
                           hint="Load the fuse module (modprobe fuse), or give the container the device (--device /dev/fuse).")


def control_path(where: str) -> str:
    """Where the mount on `where` listens: one name per real path, per user."""
    folder = os.path.join(tempfile.gettempdir(), f"dpl-mounts-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, hashlib.sha256(os.path.realpath(where).encode()).hexdigest()[:24] + ".sock")


def run(door: access.Door, repo: str, ref: str, where: str, *, write: bool, branch: str | None = None,
        ready=None, landed=None, description: str | None = None) -> None:
    """Mount, serve until unmounted, then land a --write mount's changes.

    `ready(ops)` is called once the mount is visible; `landed(commit)` for
    each commit the mount lands (None when there was nothing to land).
    """
    require_fuse()
    where = check_dir(where)
    ops = DplMount(door, repo, ref, branch=branch if write else None)
    ops.ready, ops.description = ready, description
    server = _Control(ops, control_path(where), landed)
    # libfuse's loop runs a thread per request in flight (up to max_threads):
    # the kernel reads a file ahead in several requests at once, and each
    # one's copy into the kernel happens outside Python, beside the others.
    options = {"foreground": True, "max_threads": 8, "max_idle_threads": 4, "fsname": f"dpl:{repo}@{ops.commit or branch}", "subtype": "dpl"}
    if not write:
        # A commit never changes: the kernel may keep pages, names and attributes as long as it likes.
        options.update(ro=True, kernel_cache=True, attr_timeout=3600, entry_timeout=3600, negative_timeout=3600)
    told = ops.ready

    def ready(mounted):
        threading.Thread(target=read_ahead, args=(where,), daemon=True, name="dpl-mount-read-ahead").start()
        if told is not None:
            told(mounted)

    ops.ready = ready
    try:
        server.start()
        try:
            _fuse_class()(ops, where, **options)
        except RuntimeError as e:
            # fuse_main's codes: 8 is "the loop ended on an error", which is how
            # libfuse reports a loop ended by SIGINT or SIGTERM; lower ones are set-up failures.
            if e.args != (8,):
                raise MountRefused(f"FUSE could not mount {where} (libfuse's fuse_main failed with code {e.args[0]}).",
                                   hint="Check that /dev/fuse is usable here and that fusermount3 is installed.") from None
        if write:
            try:
                commit = ops.land(reload=False)
                if landed:
                    landed(commit)
            except MountRefused as e:
                raise MountRefused(f"{e.message} The changes are kept: {ops.keep()} lists them.", hint=e.hint) from None
            except KeyboardInterrupt:  # a second Ctrl-C: landing is atomic, so it landed whole or not at all
                raise MountRefused(f"Interrupted while committing the mount's changes; {ops.keep()} lists them.",
                                   hint=f"See `dpl list-commit {repo}@{branch}` for whether the commit landed.") from None
        ops.close()
    finally:
        server.stop()


READ_AHEAD_KB = 4096


def read_ahead(where: str) -> None:
    """Let the kernel read the mount's files ahead 4 MiB at a time, in requests
    of up to 1 MiB (its default, 128 KiB, makes a big file's read thousands of
    round trips more through Python).  The setting is the mount's own
    (/sys/class/bdi/MAJOR:MINOR) and goes with it; only root may change it,
    so for others this does nothing."""
    try:
        dev = os.stat(where).st_dev  # answered by the mount's loop, which runs by now
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError:
        pass


def _fuse_class():
    """mfusepy's FUSE, answering READDIRPLUS with every entry's attributes.

    mfusepy (3.1) fills a listing with names only, so `ls -l` of a directory
    of 100,000 files costs 100,000 getattr round trips through Python (~9 s
    here).  Given the attributes with the names, the kernel keeps them (for
    the mount's attr_timeout) and asks nothing more: ~1 s.
    """
    import ctypes

    import mfusepy

    READDIR_PLUS, FILL_DIR_PLUS = 1, 2

    class Fuse(mfusepy.FUSE):
        def __init__(self, *args, **kwargs):
            self.listings: dict[str, list] = {}  # path -> its entries, from a listing's first call to its last
            super().__init__(*args, **kwargs)  # runs the loop

        def read(self, path, buf, size, offset, fip):
            # Copied from the chunk's mapping into libfuse's buffer, not
            # returned as bytes for mfusepy to copy (client/mount_read.py).
            got = self.operations.read_into(fip.contents.fh, ctypes.cast(buf, ctypes.c_void_p).value, size, offset)
            return super().read(path, buf, size, offset, fip) if got is None else got

        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
            ops = self.operations
            if not flags & READDIR_PLUS or path is None:
                return super().readdir_fuse_3(path, buf, filler, offset, fip, flags)
            where = path.decode(self.encoding, self.errors)
            # libfuse 3.14 passes a listing's attributes on only in its "offset"
            # mode: the kernel reads a page of entries per call, and each
            # call resumes where the last stopped.
            if offset == 0 or where not in self.listings:
                self.listings[where] = [(".", None), ("..", None), *ops.children(where)]
            entries = self.listings[where]
            if offset >= len(entries):  # the kernel's last call, which finds the end: only now is the listing done
                del self.listings[where]
                return 0
            base = where.rstrip("/") + "/"
            st = mfusepy.c_stat()
            attrs = ops.getattr(where)  # the directory's own: uid, gid, times
            mfusepy.set_st_attrs(st, attrs, use_ns=True)
            dir_mode, file_mode = attrs["st_mode"], stat_file_mode(attrs["st_mode"])
            ref, kind, encoding, errors = ctypes.byref(st), None, self.encoding, self.errors
            for at in range(offset, len(entries)):
                name, size = entries[at]
                if at < 2:  # . and ..: named only (with attributes, the kernel drops them)
                    if filler(buf, name.encode(), None, at + 1, 0) != 0:
                        return 0
                    continue
                one = ref
                if size is None:
                    if kind != "dir":
                        st.st_mode, st.st_nlink, st.st_size, st.st_blocks, kind = dir_mode, 2, 0, 0, "dir"
                elif size >= 0:
                    if kind != "file":
                        st.st_mode, st.st_nlink, kind = file_mode, 1, "file"
                    st.st_size, st.st_blocks = size, (size + 511) // 512
                else:  # a file written in this mount: its local file knows its size and time
                    local = mfusepy.c_stat()
                    mfusepy.set_st_attrs(local, ops.getattr(base + name), use_ns=True)
                    one = ctypes.byref(local)
                if filler(buf, name.encode(encoding, errors), one, at + 1, FILL_DIR_PLUS) != 0:
                    return 0
            # Kept for the call that finds the end: dropping it here made that call list the directory again.
            return 0

    return Fuse


def stat_file_mode(dir_mode: int) -> int:
    """A file's mode in a mount whose directories have `dir_mode`: the same bits, less the x ones."""
    import stat

    return stat.S_IFREG | (dir_mode & 0o666)


class _Control(threading.Thread):
    """Answers `commit` on the mount's socket, one JSON line per request."""

    def __init__(self, ops: DplMount, path: str, landed) -> None:
        super().__init__(daemon=True, name="dpl-mount-control")
        self.ops, self.path, self.landed = ops, path, landed
        with suppress(FileNotFoundError):
            os.unlink(path)  # left by a mount that was killed
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                request = conn.makefile("r").readline().strip()
                try:
                    if request != "commit":
                        raise DplError(f"The mount does not know the request {request!r}.")
                    commit = self.ops.land()
                    if self.landed:
                        self.landed(commit)
                    answer = {"commit": commit.id if commit is not None else None}
                except DplError as e:
                    answer = {"error": e.message, "hint": e.hint, "read_only": isinstance(e, ReadOnlyMount)}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def stop(self) -> None:
        with suppress(OSError):
            os.unlink(self.path)
        self.sock.close()


class NotServed(MountRefused):
    pass


def ask_commit(where: str) -> str | None:
    """Ask the mount on `where` to land its changes; the commit id, or None for no changes."""
    path = control_path(where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise NotServed(f"No running dpl mount serves {where}.", hint="Start one with `dpl mount REPO@BRANCH DIR --write`.") from None
    with sock:
        sock.sendall(b"commit\n")
        answer = json.loads(sock.makefile("r").readline() or "{}")
    if "error" in answer:
        raise (ReadOnlyMount if answer.get("read_only") else MountRefused)(answer["error"], hint=answer.get("hint"))
    return answer.get("commit")


def unmount(where: str) -> str | None:
    """Land a live --write mount's changes, then unmount `where` (also one whose process was killed)."""
    try:
        commit, live = ask_commit(where), True
    except NotServed:
        commit, live = None, False  # a killed mount (or none): only the kernel's side is left
    except ReadOnlyMount:
        commit, live = None, True
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise MountRefused("fusermount3 is not installed, so nothing can be unmounted.", hint="Install it: apt-get install fuse3")
    done = subprocess.run([tool, "-u", where], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = done.stderr.strip().rpartition(": ")[2] or "fusermount3 failed"
        raise MountRefused(f"{where} could not be unmounted: {why}.",
                           hint="Close the shells and programs using it (fuser -m DIR names them), then run `dpl unmount` again.")
    path = control_path(where)
    deadline = time.monotonic() + 60
    while live and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)  # the mount's process finishes and removes its socket
    if not live:
        with suppress(FileNotFoundError):
            os.unlink(path)
    return commit


def daemon(argv: list[str], where: str, log: str, timeout: float = 60.0) -> None:
    """Run `dpl mount` (argv, without --daemon) in the background; return once it is mounted."""
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(where):
            return
        if child.poll() is not None:
            with open(log, encoding="utf-8", errors="replace") as f:
                said = [line for line in f.read().splitlines() if line.strip()]
            error = next((line[len("error: "):] for line in said if line.startswith("error: ")), None)
            hint = next((line[len("hint: "):] for line in said if line.startswith("hint: ")), None)
            raise MountRefused(error or f"The background mount stopped (exit code {child.returncode}).", hint=hint or f"See {log}.")
        time.sleep(0.05)
    raise MountRefused(f"The background mount did not appear on {where} within {timeout:.0f} s.", hint=f"See {log}.")



def branch_to_write(door: access.Door, repo: str, ref: str | None) -> tuple[str, str | None]:
    """(branch, the ref its view starts from: None for a branch with no commit yet) of a --write mount."""
    from ..engine import refs
    from ..storage.errors import InvalidRef

    branch = ref or "master"
    base, depth = refs.split_ancestry(branch)
    refusal = InvalidRef(f"{repo}@{branch} names a commit, and a --write mount changes a branch.",
                         hint=f"Mount a branch: dpl mount {repo}@{base if depth else 'master'} DIR --write")
    if depth:
        raise refusal
    branches = {b["branch"] for b in door.store.list_branches(repo)}  # RepoNotFound for a missing repo
    if branch in branches:
        head = door.store.resolve_commit(repo, branch)
        return branch, head.id
    try:
        door.store.resolve_commit(repo, branch, allow_open=True)
    except DplError:
        return branch, None  # a new branch: the first commit makes it, as put-file does
    raise refusal
