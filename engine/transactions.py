"""dpl transactions: several commits and pipeline changes land together or not at all.

`start-transaction` records an open transaction in the metadata database,
as an open commit is recorded, so that the `dpl` calls that follow join it,
each in its own process:

- a write to a branch (put-file, delete-file, copy-file) goes to an open
  commit on that branch carrying the transaction's id, started on the first
  write (the bytes are stored then; only the metadata waits);
- create-pipeline and update-pipeline are validated at once and kept as ops.

`finish-transaction` then lands every one of those commits and applies
every op inside ONE metadata transaction (`Database.write`): a conflict, a
path collision or a spec that no longer fits rolls all of it back, and the
transaction stays open to be fixed or deleted.  The commits share the
transaction's id, so they and the jobs they start are one wave (one global
id), and each pipeline sees its new inputs and its new spec at once.

Compared with Pachyderm: pachctl keeps the active transaction in the
client's config (per user), and queues the requests themselves (start and
finish commit, create branch, create/update pipeline) to replay them at
finish; put-file is not part of it.  Here the open transaction belongs to
the store (one at a time, as a branch has one open commit), file writes
join it through open commits, and branch creation is not queued.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from ..storage import index
from ..storage.errors import DplError
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import transactions as txn_rows
from ..storage.metadata.db import Database

if TYPE_CHECKING:
    from .commits import Commits
    from .pipelines import Pipelines


class TransactionError(DplError):
    pass


class Transactions:
    def __init__(self, db: Database, commits: "Commits", pipelines: "Pipelines"):
        self.db, self.commits, self.pipelines = db, commits, pipelines

    def start_transaction(self) -> str:
        with self.db.write() as tx:
            current = txn_rows.open_one(tx)
            if current is not None:
                raise TransactionError(f"Transaction {current.id} is already open.",
                                       hint="Finish it (`dpl finish-transaction`) or delete it (`dpl delete-transaction`) first.")
            txn = uuid.uuid4().hex
            txn_rows.insert(tx, txn, time.time())
        return txn

    def inspect_transaction(self, txn: str | None = None) -> dict:
        t = self._get(txn)
        return {"id": t.id, "state": t.state, "created": t.created, "finished": t.finished,
                "commits": [f"{c.repo}@{c.branch}" for c in commit_rows.open_with_id(self.db, t.id)]
                if t.state == "open" else [f"{c.repo}@{c.branch}" for c in commit_rows.with_id(self.db, t.id)],
                "ops": [{"kind": o.kind, "pipeline": o.body["name"]} for o in txn_rows.ops(self.db, t.id)]}

    def finish_transaction(self, txn: str | None = None) -> dict:
        """Land every commit and apply every op of the transaction, in one metadata transaction."""
        t = self._get(txn, open_only=True)
        opened = commit_rows.open_with_id(self.db, t.id)
        for c in opened:  # the bytes are durable and the index layers readable before anything lands
            for layer in c.delta:
                index.read_layer(self.commits.chunks, layer)
        landed, applied = [], []
        with self.db.write() as tx:
            if not txn_rows.close(tx, t.id, "finished", time.time()):
                raise TransactionError(f"Transaction {t.id} is no longer open.")
            for c in commit_rows.open_with_id(tx, t.id):
                landed.append(self.commits.land(c.repo, c.branch, c.delta, open_id=c.id, tx=tx))
            for op in txn_rows.ops(tx, t.id):
                body = op.body
                applied.append(self.pipelines.create_pipeline(body["text"], source=body["source"], update=op.kind == "update-pipeline",
                                                              reprocess=body.get("reprocess", False), tx=tx, wave=t.id))
        for c in landed:
            self.commits.compact(c.repo, c.id)
        return {"id": t.id, "commits": [f"{c.repo}@{c.id}" for c in landed], "pipelines": applied}

    def delete_transaction(self, txn: str | None = None) -> dict:
        """Abandon the transaction: its open commits and its ops go; nothing of it lands."""
        t = self._get(txn, open_only=True)
        with self.db.write() as tx:
            dropped = commit_rows.open_with_id(tx, t.id)
            for c in dropped:
                commit_rows.delete(tx, c.repo, c.id, open_only=True)
            txn_rows.delete_ops(tx, t.id)
            txn_rows.close(tx, t.id, "deleted", time.time())
        return {"id": t.id, "dropped": [f"{c.repo}@{c.branch}" for c in dropped]}

    # ---------------------------------------------------- joining (callers)

    def open_id(self) -> str | None:
        """The open transaction's id, for the writes and pipeline changes that join it."""
        t = txn_rows.open_one(self.db)
        return t.id if t else None

    def _get(self, txn: str | None, open_only: bool = False):
        t = txn_rows.get(self.db, txn) if txn else txn_rows.open_one(self.db)
        if t is None:
            raise TransactionError(f"No transaction {txn!r}." if txn else "No transaction is open.",
                                   hint="Start one with `dpl start-transaction`.")
        if open_only and t.state != "open":
            raise TransactionError(f"Transaction {t.id} is {t.state}, not open.")
        return t
