"""Typed errors for everything a user can get wrong or the store can report.

Every error carries one sentence (`message`) and an optional `hint`; the CLI
turns any `DplError` into those two lines on stderr and a non-zero exit, in
one place, so no user error ever shows a traceback.  Each layer defines its
own: these are the storage layer's (stores, names, paths, repos, commits,
bytes); pipeline, job, executor and secret errors live in `engine/errors.py`.
Both derive from `DplError`, which is why the CLI renders every one the same.
"""

from __future__ import annotations


class DplError(Exception):
    """Base of every error dpl reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class StoreNotFound(DplError):
    pass


class StoreExists(DplError):
    pass


class InvalidName(DplError):
    pass


class InvalidPath(DplError):
    pass


class PathCollision(InvalidPath):
    """A commit would make `file` both a file and a directory (`beneath` is under it)."""

    def __init__(self, message: str, hint: str | None = None, *, file: str, beneath: str):
        super().__init__(message, hint)
        self.file, self.beneath = file, beneath


class InvalidRef(DplError):
    pass


class RepoNotFound(DplError):
    pass


class RepoExists(DplError):
    pass


class RepoInUse(DplError):
    pass


class CommitInUse(DplError):
    """A commit cannot be deleted or squashed as it stands (children, branches, a running job)."""


class WouldOrphan(DplError):
    """Deleting this would leave downstream commits whose provenance names data that is gone."""


class BranchNotFound(DplError):
    pass


class CommitNotFound(DplError):
    pass


class AmbiguousRef(DplError):
    pass


class CommitNotOpen(DplError):
    pass


class FileNotFound(DplError):
    pass


class SourceNotFound(DplError):
    pass


class Conflict(DplError):
    """A concurrent writer changed what this operation relied on."""


class Corruption(DplError):
    """Stored bytes or metadata do not match what was written."""


class DiskFull(DplError):
    """The disk holding the store ran out of space; nothing was committed."""

    def __init__(self, message: str = "The disk holding the store is full; nothing was committed.", hint: str | None = None):
        super().__init__(message, hint or "Free some space (`dpl gc` removes what failed commands left) and run the command again.")


class StorageUnavailable(DplError):
    """The object store could not be reached or refused a request."""
