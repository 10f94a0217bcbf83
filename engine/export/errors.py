"""The errors of exporting: one sentence and a hint, rendered by the CLI like every DplError."""

from __future__ import annotations

from ...storage.errors import DplError


class ExportError(DplError):
    """The pipelines cannot be exported as asked (a store a cluster cannot reach, an unknown pipeline...)."""


class ExportUnavailable(DplError):
    """The library that writes the format (hera, kfp) is not installed."""


def missing(tool: str, name: str) -> ExportUnavailable:
    return ExportUnavailable(f"Exporting to {tool} needs {name} (not installed).", hint="pip install 'dpl[export]'")
