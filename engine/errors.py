"""The engine's errors: specs, pipelines, jobs, datums, executors, secrets.

They derive from the storage layer's `DplError`, so the CLI renders them
(one sentence and a hint) in the same single place as every other error.
"""

from __future__ import annotations

from ..storage.errors import DplError


class InvalidSpec(DplError):
    pass


class PipelineNotFound(DplError):
    pass


class PipelineExists(DplError):
    pass


class JobNotFound(DplError):
    pass


class DatumNotFound(DplError):
    pass


class JobFailed(DplError):
    pass


class ExecutorUnavailable(DplError):
    pass


class SecretNotFound(DplError):
    pass


class SecretExists(DplError):
    pass


class BadOutput(DplError):
    """A step left something in /pfs/out that cannot be stored as it is (a dangling link, a pipe)."""
