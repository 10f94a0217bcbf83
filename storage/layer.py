"""A layer of a commit's file index: the id of one Arrow table and its row count.

It lives apart from `index` (which needs pyarrow) because the metadata layer
stores commits' layer lists and must stay importable without pyarrow: a
`dpl list-repo` should not pay for importing Arrow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    id: bytes
    rows: int

    def to_json(self) -> dict:
        return {"id": self.id.hex(), "rows": self.rows}

    @classmethod
    def from_json(cls, d: dict) -> "Layer":
        return cls(bytes.fromhex(d["id"]), int(d["rows"]))
