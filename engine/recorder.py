"""Recording finished datums: `Recorder`, used by one run of a job (`jobrun.JobRun`).

A runner killed mid-job must redo none of the datums it finished, so each
datum's record (state, log, tries, why it ran), where its outputs are and
which input file versions it read (the lineage provenance walks) are written
as the datums finish, in batches, not when the job ends.
"""

from __future__ import annotations

import json
import threading
import time

import pyarrow as pa

from .executors.base import DatumResult
from ..storage import index
from ..storage.chunkstore import ChunkStore
from ..storage.metadata import datums as datum_rows
from ..storage.metadata.db import Database

FLUSH_SECONDS = 1.0
FLUSH_DATUMS = 500


class Recorder:
    """Buffers finished datums and records them in batches.

    Outputs of many datums share one Arrow table object (a datum is a row
    range of it); the datum records, their output ranges and their lineage
    are written in one transaction per batch, after the chunks are durable.
    A batch is written at most FLUSH_SECONDS after its first datum finished,
    even when no other datum follows (a timer): beside a long datum, the
    short ones are on record (`dpl logs -f`, a stop, a kill -9) within a second.
    """

    def __init__(self, db: Database, chunks: ChunkStore, pipeline: str, job: str):
        self.db, self.chunks, self.pipeline, self.job = db, chunks, pipeline, job
        self.lock = threading.Lock()
        self.pending: list[tuple] = []
        self.ok_index: list[int] = []  # the datums (indexes in the job's datum set) that ran and succeeded
        self.failed_index: list[int] = []  # ... that ran and failed
        self.last_flush = time.time()
        self._timer: threading.Timer | None = None
        self._error: BaseException | None = None  # a timed flush's failure, raised by the next flush

    def add(self, i: int, dset, task, result: DatumResult, tries: int, reason: str, secrets: list[str]) -> None:
        def scrub(b: bytes) -> str:
            text = b.decode("utf-8", "replace")
            for value in secrets:  # longest first: a value inside another is not left half shown
                text = text.replace(value, "***")
            return text

        if result.error:
            result.error = scrub(result.error.encode())

        inputs = [
            {"name": inp.name, "repo": inp.repo, "commit": inp.commit, "path": inp.match,
             "files": [[f["path"], f["hash"].hex(), f["size"]] for f in inp.files]}
            for inp in task.inputs
        ]
        record = (i, task.datum, dset.key(i), result, tries, reason, inputs, scrub(result.stdout), scrub(result.stderr))
        with self.lock:
            self.pending.append(record)
            (self.ok_index if result.ok else self.failed_index).append(i)
            if len(self.pending) >= FLUSH_DATUMS or time.time() - self.last_flush > FLUSH_SECONDS:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self._flush_timed)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write every pending datum now (the job's last word on them)."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_locked()

    def _flush_timed(self) -> None:
        with self.lock:
            self._timer = None
            try:
                self._flush_locked()
            except BaseException as e:  # no thread to raise to here: the next flush raises it
                self._error = e

    def _flush_locked(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        self.last_flush = time.time()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        try:
            self._write(pending)
        except BaseException:
            self.pending = pending + self.pending  # kept for the next flush: a recorded datum is never dropped
            raise

    def _write(self, pending: list[tuple]) -> None:
        tables, spans, start = [], {}, 0
        for _, datum, _, result, *_ in pending:
            if result.ok and result.outputs is not None:
                t = result.outputs
                n = t.num_rows
                t = t.set_column(t.schema.get_field_index("datum"), "datum", pa.array([bytes.fromhex(datum)] * n, pa.binary(16)))
                tables.append(t)
                spans[datum] = (start, n)
                start += n
        batch = index.write_table(self.chunks, pa.concat_tables(tables)).hex() if start else ""
        self.chunks.sync()
        runs, outputs, reads = [], [], []
        for _, datum, key, result, tries, reason, inputs, stdout, stderr in pending:
            s, n = spans.get(datum, (0, 0))
            runs.append(datum_rows.Datum(
                pipeline=self.pipeline, job=self.job, datum=datum, key=key, state="success" if result.ok else "failed",
                reason=reason, started=result.started, finished=result.finished, tries=tries, exit_code=result.exit_code,
                stdout=stdout, stderr=stderr, error=result.error, outputs=n, inputs_json=json.dumps(inputs),
            ))
            if result.ok:
                outputs.append(datum_rows.DatumOutput(self.pipeline, datum, batch, s, n, self.job))
                reads += [datum_rows.Read(inp["repo"], f[0], f[1], self.pipeline, datum) for inp in inputs for f in inp["files"]]
        with self.db.write() as tx:
            datum_rows.record(tx, runs, outputs, reads)
