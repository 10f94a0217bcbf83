"""dpl transactions: the `transactions` and `transaction_ops` tables.

An open transaction is kept here (like an open commit) so that separate
`dpl` calls join it: writes to a branch go to an open commit carrying the
transaction's id (`commits` table), and pipeline changes wait here as ops
until `finish-transaction` applies everything in one metadata transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .db import Row, Tx


@dataclass
class Transaction:
    id: str
    created: float
    state: str  # open, finished, deleted
    finished: float | None

    @classmethod
    def from_row(cls, row: Row) -> "Transaction":
        return cls(row["id"], row["created"], row["state"], row["finished"])


@dataclass
class Op:
    txn: str
    seq: int
    kind: str  # create-pipeline, update-pipeline
    body: dict

    @classmethod
    def from_row(cls, row: Row) -> "Op":
        return cls(row["txn"], row["seq"], row["kind"], json.loads(row["body"]))


def get(tx: Tx, txn: str) -> Transaction | None:
    row = tx.one("SELECT * FROM transactions WHERE id=?", (txn,))
    return Transaction.from_row(row) if row is not None else None


def open_one(tx: Tx) -> Transaction | None:
    """The store's open transaction, if one was started."""
    row = tx.one("SELECT * FROM transactions WHERE state='open' ORDER BY created LIMIT 1")
    return Transaction.from_row(row) if row is not None else None


def insert(tx: Tx, txn: str, created: float) -> None:
    tx.execute("INSERT INTO transactions (id, created, state) VALUES (?, ?, 'open')", (txn, created))


def close(tx: Tx, txn: str, state: str, finished: float) -> bool:
    """Finish or delete an open transaction; False if it was not open any more."""
    cur = tx.execute("UPDATE transactions SET state=?, finished=? WHERE id=? AND state='open'", (state, finished, txn))
    return cur.rowcount == 1


def ops(tx: Tx, txn: str) -> list[Op]:
    return [Op.from_row(r) for r in tx.all("SELECT * FROM transaction_ops WHERE txn=? ORDER BY seq", (txn,))]


def add_op(tx: Tx, txn: str, kind: str, body: dict) -> int:
    row = tx.one("SELECT COALESCE(MAX(seq), 0) AS n FROM transaction_ops WHERE txn=?", (txn,))
    seq = int(row["n"]) + 1
    tx.execute("INSERT INTO transaction_ops (txn, seq, kind, body) VALUES (?, ?, ?, ?)", (txn, seq, kind, json.dumps(body)))
    return seq


def delete_ops(tx: Tx, txn: str) -> None:
    tx.execute("DELETE FROM transaction_ops WHERE txn=?", (txn,))
