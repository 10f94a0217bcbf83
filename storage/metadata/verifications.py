"""Verifications: the `verifications` table, what `dpl verify` found about an output commit.

One row per (repo, commit): the latest verification, with the counts a
listing shows and the per-datum report (which files differed, their diffs)
as JSON, parsed on use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .db import Row, Tx

COLUMNS = "repo, commit_id, verified, executor, checked, reproducible, total, sample, report"


@dataclass
class Verification:
    repo: str
    commit: str
    verified: float  # when
    executor: str  # where the datums were re-run
    checked: int  # datums re-run
    reproducible: int  # of those, the ones whose outputs hashed the same
    total: int  # datums that made the commit
    sample: int | None  # --sample N, if given
    report_json: str = "[]"  # [{datum, key, reproducible, error, files: [{path, change, diff}]}]

    @property
    def report(self) -> list[dict]:
        return json.loads(self.report_json)

    @property
    def ok(self) -> bool:
        return self.checked == self.reproducible

    @classmethod
    def from_row(cls, row: Row) -> "Verification":
        return cls(row["repo"], row["commit_id"], row["verified"], row["executor"], row["checked"], row["reproducible"],
                   row["total"], row["sample"], row["report"])


def get(tx: Tx, repo: str, commit: str) -> Verification | None:
    row = tx.one(f"SELECT {COLUMNS} FROM verifications WHERE repo=? AND commit_id=?", (repo, commit))
    return Verification.from_row(row) if row is not None else None


def record(tx: Tx, v: Verification) -> None:
    """Keep `v` as the commit's verification, replacing an earlier one."""
    tx.execute(
        f"INSERT INTO verifications ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (repo, commit_id) DO UPDATE SET verified=excluded.verified, executor=excluded.executor, "
        "checked=excluded.checked, reproducible=excluded.reproducible, total=excluded.total, sample=excluded.sample, "
        "report=excluded.report",
        (v.repo, v.commit, v.verified, v.executor, v.checked, v.reproducible, v.total, v.sample, v.report_json),
    )


def delete_of_repo(tx: Tx, repo: str) -> None:
    tx.execute("DELETE FROM verifications WHERE repo=?", (repo,))
