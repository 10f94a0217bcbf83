"""Datums and lineage: the `datums`, `datum_outputs` and `lineage` tables.

`datums` records every datum a job ran (inputs, logs, outcome); a datum's
outputs are a row range of an Arrow table in the chunk store
(`datum_outputs`), and `lineage` indexes which datums read which input file
versions, so provenance and subvenance are lookups.
"""

from __future__ import annotations

from .db import Tx  # noqa: F401
