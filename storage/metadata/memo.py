"""A transaction that answers a read it has already run, until something writes.

A group of commits landed in one transaction (engine/commits.py) calls the
landing's subscribers once per commit, and each reads the same few rows
(the pipeline graph, the branch's triggers): on PostgreSQL a round trip
apiece, all while every writer of the database waits.  Inside one write
transaction nobody else changes a row (writers are serialised), so a read
repeated with the same arguments gives the same rows until this
transaction writes; any statement that is not a SELECT forgets them all.
"""

from __future__ import annotations

from .db import Row, Tx


class _Rows:
    """What a cursor of a remembered read offers."""

    def __init__(self, rows: list[Row]):
        self._rows = rows
        self.rowcount = len(rows)

    def fetchone(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Row]:
        return list(self._rows)


class MemoTx(Tx):
    def __init__(self, tx: Tx):
        self.tx = tx
        self._reads: dict[tuple, list[Row]] = {}

    def execute(self, sql: str, args=()):
        if sql.lstrip()[:6].upper() != "SELECT":
            self._reads.clear()
            return self.tx.execute(sql, args)
        key = (sql, tuple(args))
        try:
            rows = self._reads.get(key)
        except TypeError:  # an argument that cannot be a key (a list): not remembered
            return self.tx.execute(sql, args)
        if rows is None:
            rows = self._reads[key] = self.tx.execute(sql, args).fetchall()
        return _Rows(rows)

    def executemany(self, sql: str, rows) -> None:
        self._reads.clear()
        self.tx.executemany(sql, rows)

    def __getattr__(self, name: str):
        return getattr(self.tx, name)  # what a backend's transaction has besides (its connection)
