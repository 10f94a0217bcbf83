"""The write-back half of a `dpl mount --write`: local changes, landed as one commit.

`WriteBack` is mixed into `DplMount` (client/mount.py, the view and its
reads): the FUSE operations that change the tree (create, write, truncate,
unlink, mkdir, rmdir, rename) keep new bytes in local temporary files and
a set of deleted paths; `land` turns them into one commit on the branch,
applied path by path to the branch's head of that moment, as `put-file`
plus `delete-file` would be.  It uses the view's `tree`, `local`,
`deleted`, `ranges`, `handles` and `_lock`.
"""

from __future__ import annotations

import errno
import os
import tempfile

from . import access
from ..storage.errors import DplError


class MountRefused(DplError):
    """A mount that cannot be made or asked something (one sentence and a hint)."""


class ReadOnlyMount(MountRefused):
    """A read-only mount asked to commit."""


def _oserror(code: int):
    import mfusepy  # loaded already: only a mount reaches here

    return mfusepy.FuseOSError(code)


class WriteBack:
    """The changing operations of a view and the landing of its changes.

    Reached only with --write: a read-only mount is mounted `ro`, so the
    kernel answers EROFS before asking; `_writable` is the second lock."""

    def _writable(self) -> None:
        if not self.branch:
            raise _oserror(errno.EROFS)

    def _copy_up(self, path: str, *, truncate: bool = False) -> str:
        """The local file holding `path`'s bytes, made from the commit's on first write."""
        local = self.local.get(path)
        if local is None:
            fd, local = tempfile.mkstemp(dir=self.spool)
            with os.fdopen(fd, "wb") as out:
                _, size = self.tree.lookup(path)
                if not truncate and size:
                    rng, at = self._range(path), 0
                    while at < size:
                        out.write(rng.fetch(at, at + (4 << 20)))
                        at += 4 << 20
            self.local[path] = local
            self._set(path, -1)
        elif truncate:
            os.truncate(local, 0)
        return local

    def _set(self, path: str, size: int | None) -> None:
        parent, _, name = path.rpartition("/")
        self.tree._mkdirs(parent or "/")[name] = size

    def _parent_dir(self, path: str) -> None:
        parent = path.rpartition("/")[0] or "/"
        if parent not in self.tree.dirs:
            raise _oserror(errno.ENOENT)

    def create(self, path, mode, fi=None):
        with self._lock:
            self._writable()
            self._parent_dir(path)
            if path in self.tree.dirs:
                raise _oserror(errno.EISDIR)
            return self._handle(os.open(self._copy_up(path, truncate=True) if self._exists(path) else self._new(path), os.O_RDWR), path)

    def _exists(self, path: str) -> bool:
        try:
            self.tree.lookup(path)
            return True
        except KeyError:
            return False

    def _new(self, path: str) -> str:
        fd, local = tempfile.mkstemp(dir=self.spool)
        os.close(fd)
        self.local[path] = local
        self._set(path, -1)
        return local

    def write(self, path, data, offset, fh):
        return os.pwrite(self.handles[fh], data, offset)

    def _writable_file(self, path):
        """Refuse a change to `path` unless the view is writable and `path` is an existing file."""
        self._writable()
        if path in self.tree.dirs:
            raise _oserror(errno.EISDIR)
        if not self._exists(path):
            raise _oserror(errno.ENOENT)

    def truncate(self, path, length, fh=None):
        with self._lock:
            self._writable_file(path)
            os.truncate(self._copy_up(path, truncate=length == 0), length)
        return 0

    def unlink(self, path):
        with self._lock:
            self._writable_file(path)
            self._drop(path)
            parent, _, name = path.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def _drop(self, path: str) -> None:
        """Forget `path`'s bytes (its open handles keep theirs, as on any filesystem)."""
        local = self.local.pop(path, None)
        if local is not None:
            os.unlink(local)
        if path in self.tree.committed:
            self.deleted.add(path)
        self.ranges.pop(path, None)

    def mkdir(self, path, mode):
        with self._lock:
            self._writable()
            self._parent_dir(path)
            if self._exists(path):
                raise _oserror(errno.EEXIST)
            self.tree._mkdirs(path)
        return 0

    def rmdir(self, path):
        with self._lock:
            self._writable()
            children = self.tree.dirs.get(path)
            if children is None:
                raise _oserror(errno.ENOTDIR if self._exists(path) else errno.ENOENT)
            if children:
                raise _oserror(errno.ENOTEMPTY)
            if path == "/":
                raise _oserror(errno.EBUSY)
            del self.tree.dirs[path]
            parent, _, name = path.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def rename(self, old, new):
        with self._lock:
            self._writable()
            self._parent_dir(new)
            if not self._exists(old):
                raise _oserror(errno.ENOENT)
            if new == old or new.startswith(old + "/"):
                raise _oserror(errno.EINVAL)
            if old in self.tree.dirs:
                if self.tree.dirs.get(new):
                    raise _oserror(errno.ENOTEMPTY)
                if self._exists(new) and new not in self.tree.dirs:
                    raise _oserror(errno.ENOTDIR)
                moves = [(p, new + p[len(old):]) for p in self.tree.files_under(old)]
                empty = [d for d, c in self.tree.dirs.items() if (d == old or d.startswith(old + "/")) and not c]
            else:
                if new in self.tree.dirs:
                    raise _oserror(errno.EISDIR)
                moves, empty = [(old, new)], []
            for src, dst in moves:
                # A file of the commit is copied to a local file first: the
                # chunks are content-addressed, so landing it stores nothing new.
                local = self._copy_up(src)
                del self.local[src]
                if self._exists(dst) and dst not in self.tree.dirs:
                    self._drop(dst)
                self.local[dst] = local
                if src in self.tree.committed:
                    self.deleted.add(src)
                self._set(dst, -1)
                self.ranges.pop(src, None)
            for d in empty:
                self.tree._mkdirs(new + d[len(old):])
            if old in self.tree.dirs:
                for d in [d for d in self.tree.dirs if d == old or d.startswith(old + "/")]:
                    del self.tree.dirs[d]
            parent, _, name = old.rpartition("/")
            del self.tree.dirs[parent or "/"][name]
        return 0

    def chmod(self, path, mode):
        return 0  # dpl keeps no modes; accepted so that `cp -p` and editors work

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        handle = self.handles.get(fh)
        if isinstance(handle, int):
            os.fsync(handle)
        return 0

    # ------------------------------------------------------------ landing

    def changes(self) -> tuple[int, int]:
        with self._lock:
            return len(self.local), len(self.deleted - set(self.local))

    def land(self, description: str | None = None, *, reload: bool = True):
        """Land the local changes as one commit on the branch; None when there were none.

        `reload`: show the landed commit afterwards (not when the mount is ending)."""
        with self._lock:
            if not self.branch:
                raise ReadOnlyMount("This mount is read-only, so it has nothing to commit.",
                                   hint="Mount with --write on a branch to change files.")
            if self.writers:
                raise MountRefused(f"{len(self.writers)} file(s) are still open for writing in the mount, so nothing was committed.",
                                   hint="Close them (finish the copy or save in the editor), then commit again.")
            written, gone = dict(self.local), sorted(self.deleted - set(self.local))
            if not written and not gone:
                return None
            ops: list = []
            if gone:
                ops.append(access.Delete(self.door, self.repo, self.branch, gone))
            ops.extend(access.Put(self.door, self.repo, self.branch, p, local) for p, local in sorted(written.items()))
            text = description or self.description or f"dpl mount: {len(written)} file(s) written, {len(gone)} deleted"
            try:
                landed = access.land(ops, text)[0]
            except DplError as e:
                raise MountRefused(f"The mount's changes could not be committed: {e.message}", hint=e.hint) from None
            for local in written.values():
                os.unlink(local)
            if reload:
                self._load(self.branch)
            else:
                self.local, self.deleted = {}, set()
            return landed

    def keep(self) -> str:
        """Write down what the local files are (for changes that could not land); the list's path."""
        import json

        listed = os.path.join(self.spool, "changes.json")
        with open(listed, "w", encoding="utf-8") as f:
            json.dump({"repo": self.repo, "branch": self.branch, "written": self.local,
                       "deleted": sorted(self.deleted - set(self.local))}, f, indent=1)
        return listed

    def close(self) -> None:
        """Drop the local files (after landing, or when there was nothing to land)."""
        if self.spool:
            import shutil

            shutil.rmtree(self.spool, ignore_errors=True)

