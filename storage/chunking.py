"""Content-defined chunking of a stream of files into stored chunks.

All files of one write are laid end to end in a single byte stream which
FastCDC cuts at content-defined boundaries (about 1 MiB apart).  Many small
files therefore share a chunk, a big file spans many, and because the cut
points depend only on nearby bytes, an edit in the middle of a big file
changes only the chunks around it: the rest dedupe against what is stored.

A file at least as big as the smallest chunk (`own_chunks_from`) starts and
ends on a chunk boundary of its own (`write_from`, `write_whole`).  FastCDC
finds its first cut from where a chunk starts, so a big file that shared its
first chunk with the small files before it would be cut differently from
the same file put alone, and its last chunk would hold the next files' first
bytes: the same 20 MB put again in other company re-stored about 8% of it.
Cut at both ends, a file's chunks depend on its bytes alone.  Smaller files
still share chunks: one object each would cost more than it saves.

A file is remembered as its (start, length) in the stream; once the stream is
closed, `refs()` turns those ranges into per-file lists of
(chunk id, offset, length) in one vectorised pass.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import weakref

import pyarrow as pa

from .chunkstore import ChunkStore, object_id

AVG_CHUNK = 1 << 20
# Cut only once this much is buffered: the last cut in a buffer is provisional
# (the buffer end is not a content boundary) and is retried with more data.
_BUFFER = 16 << 20
BLOCK = 8 << 20
_ROUND = _BUFFER + BLOCK  # capacity of one round buffer
# Rounds handed to the background putter and not yet stored: with the one
# being filled and the one being stored, at most _IN_FLIGHT + 2 buffers exist.
_IN_FLIGHT = 2

REF_TYPE = pa.struct([("chunk", pa.binary(16)), ("offset", pa.int64()), ("length", pa.int64())])
REFS_TYPE = pa.list_(REF_TYPE)


class ChunkWriter:
    """Cut a stream into chunks on this thread; name and store them on another.

    The cutting (pyfastcdc) runs without the GIL; naming a chunk (xxh3)
    holds it and storing is system calls (or network) that release it.  So
    one background thread naming and storing overlaps with the cutting, and
    a big write goes at the speed of the slower, not of their sum.  `close()`
    waits for every chunk to be stored (and re-raises a storing error), so a
    caller that records a commit after `close()` never refers to a missing
    chunk.

    Bytes are gathered in round buffers that are recycled once stored, and
    files are read straight into them (`write_from`): a big file costs one
    copy from the page cache and no fresh memory per block.
    """

    def __init__(self, store: ChunkStore, avg_size: int = AVG_CHUNK):
        from pyfastcdc import FastCDC  # here: the CLI imports this module for every command

        self.store = store
        self._cdc = FastCDC(avg_size, min_size=avg_size // 4, max_size=avg_size * 4)
        self.own_chunks_from = avg_size // 4  # files this big get chunks of their own
        self._buf = bytearray()  # the round being filled: grows to _ROUND, then is recycled
        self._fill = 0
        self._marks: list[int] = []  # file boundaries in the round buffer, ascending
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # stored rounds, to reuse
        self._pos = 0  # bytes written to the stream so far
        self._chunk_starts: list[int] = []
        self._chunk_lengths: list[int] = []
        self._chunk_ids: list[bytes] = []
        self.bytes_written = 0  # new bytes that reached the store
        self.closed = False
        self._putter: _Putter | None = None

    def write(self, data) -> int:
        """Append `data` to the stream; return its start offset."""
        start = self._pos
        view = memoryview(data).cast("B")
        done, n = 0, len(view)
        while done < n:
            if self._fill >= _BUFFER:
                self._cut(final=False)
            piece = min(self._room(n - done), n - done)
            self._buf[self._fill : self._fill + piece] = view[done : done + piece]
            self._fill += piece
            done += piece
        self._pos += n
        return start

    def write_whole(self, data) -> int:
        """Append one whole file's bytes (its own chunks if it is big); return its start."""
        own = memoryview(data).nbytes >= self.own_chunks_from
        if own:
            self.boundary()
        start = self.write(data)
        if own:
            self.boundary()
        return start

    def boundary(self) -> None:
        """End the current chunk here: the next byte written starts a new one.

        Only marked here, and honoured when the buffer is cut: a tree of
        many mid-sized files costs no extra rounds or buffers."""
        if self._fill and (not self._marks or self._marks[-1] != self._fill):
            self._marks.append(self._fill)

    def write_from(self, f, hasher=None) -> tuple[int, int]:
        """Append one whole file, an open binary file from its position to its
        end, read straight into the round buffer (and fed to `hasher` on the
        way); return (start, length).  A big file gets chunks of its own; one
        of unknown size (a pipe) starts on a boundary in case it is big."""
        try:
            st = os.fstat(f.fileno())
            size = st.st_size - f.tell() if stat.S_ISREG(st.st_mode) else None
        except (AttributeError, OSError, ValueError):
            size = None
        if size is None or size >= self.own_chunks_from:
            self.boundary()
        start, length = self._read_in(f, hasher)
        if length >= self.own_chunks_from:
            self.boundary()
        return start, length

    def _read_in(self, f, hasher) -> tuple[int, int]:
        start = self._pos
        while True:
            if self._fill >= _BUFFER:
                self._cut(final=False)
            self._room(BLOCK)
            with memoryview(self._buf) as whole:
                region = whole[self._fill :]
                n = f.readinto(region)
                if n and hasher is not None:
                    hasher.update(region[:n])
                region.release()
            if not n:
                return start, self._pos - start
            self._fill += n
            self._pos += n

    def write_file(self, f) -> tuple[int, int]:
        """Append a whole open binary file; return (start, length)."""
        return self.write_from(f)

    def _room(self, want: int) -> int:
        """Free bytes in the round buffer, growing it (up to _ROUND) for `want`."""
        if self._fill + want > len(self._buf) and len(self._buf) < _ROUND:
            grown = bytearray(min(_ROUND, max(2 * len(self._buf), self._fill + want, 1 << 16)))
            grown[: self._fill] = memoryview(self._buf)[: self._fill]
            self._buf = grown
        return len(self._buf) - self._fill

    def _cut(self, final: bool) -> None:
        """Cut the buffered bytes into chunks and hand them to the putter.

        Each stretch between two file boundaries (`boundary()`) is cut on its
        own, its end being a real chunk end.  `final`: so is the buffer's
        end (the stream is closing); otherwise the last piece is provisional
        and is cut again with what follows.
        """
        buf, fill = self._buf, self._fill
        base = self._pos - fill  # stream offset of buf[0]
        view = memoryview(buf)[:fill]
        edges = self._marks + [fill]
        self._marks = []
        batch = []
        consumed = begin = 0
        for i, end in enumerate(edges):
            if end == begin:
                continue
            cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view[begin:end])]
            if not final and i == len(edges) - 1:
                cuts = cuts[:-1]
            for offset, length in cuts:
                batch.append(view[begin + offset : begin + offset + length])
                self._chunk_starts.append(base + begin + offset)
                self._chunk_lengths.append(length)
                consumed = begin + offset + length
            begin = end
        # The provisional tail starts the next round, in a recycled buffer.
        try:
            nxt = self._free.get_nowait()
        except queue.Empty:
            nxt = bytearray(_ROUND) if not final else bytearray()
        nxt[: fill - consumed] = view[consumed:fill]
        self._buf, self._fill = nxt, fill - consumed
        if batch and final and self._putter is None:
            # The whole write fit in one round (a small put, a commit of a
            # few files): store it here, sparing a thread's start and join.
            self.bytes_written += _store_batch(self.store, batch, self._chunk_ids)
        elif batch:
            if self._putter is None:
                self._putter = _Putter(self.store, self._free, self._chunk_ids)
                # A writer dropped without close() (its caller failed) stops its thread.
                weakref.finalize(self, self._putter.abandon)
            self._putter.submit(batch, buf)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._fill:
                self._cut(final=True)
            self._buf = bytearray()
            if self._putter is not None:
                self.bytes_written += self._putter.finish()

    def refs(self, starts, lengths) -> pa.ListArray:
        """Per-file chunk references for files at stream ranges (start, length)."""
        import numpy as np

        self.close()
        fs = np.asarray(starts, dtype=np.int64)
        fl = np.asarray(lengths, dtype=np.int64)
        if not self._chunk_starts:
            return pa.ListArray.from_arrays(int_array(np.zeros(len(fs) + 1, np.int32)), pa.array([], REF_TYPE))
        cs = np.asarray(self._chunk_starts, dtype=np.int64)
        ce = cs + np.asarray(self._chunk_lengths, dtype=np.int64)
        fe = fs + fl
        first = np.searchsorted(cs, fs, "right") - 1
        last = np.searchsorted(cs, fe - 1, "right") - 1
        count = np.where(fl > 0, last - first + 1, 0)
        offsets = np.zeros(len(fs) + 1, dtype=np.int64)
        np.cumsum(count, out=offsets[1:])
        owner = np.repeat(np.arange(len(fs)), count)
        chunk = first[owner] + (np.arange(offsets[-1]) - offsets[owner])
        ref_start = np.maximum(fs[owner], cs[chunk])
        ref_end = np.minimum(fe[owner], ce[chunk])
        ids = pa.array(self._chunk_ids, pa.binary(16)).take(int_array(chunk))
        values = pa.StructArray.from_arrays(
            [ids, int_array(ref_start - cs[chunk]), int_array(ref_end - ref_start)], fields=list(REF_TYPE)
        )
        return pa.ListArray.from_arrays(int_array(offsets.astype(np.int32)), values, type=REFS_TYPE)


def int_array(values) -> pa.Array:
    """A 1-d numpy array of int32/int64 as an Arrow array, zero-copy.

    pa.array(ndarray) would do, but it first imports numpy.ma to check for a
    masked array: 20-70 ms on every put-file for nothing.
    """
    import numpy as np

    if values.dtype != np.int32:
        values = values.astype(np.int64, copy=False)
    values = np.ascontiguousarray(values)
    kind = pa.int32() if values.dtype == np.int32 else pa.int64()
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _store_batch(store: ChunkStore, batch: list, ids: list) -> int:
    """Name and store chunks (views into a round buffer, released here);
    append their ids; return the bytes that were new to the store."""
    new = 0
    try:
        for data in batch:
            oid = object_id(data)
            ids.append(oid)
            if store.put(oid, data):
                new += len(data)
    finally:
        for data in batch:
            data.release()
    return new


class _Putter:
    """One background thread naming and storing rounds of chunks in order,
    handing each round's buffer back for reuse once it is stored.

    It also computes the chunk ids (appended to `ids`, in stream order): the
    hash holds the GIL, but the cutting it then overlaps does not.
    """

    def __init__(self, store: ChunkStore, free: queue.SimpleQueue, ids: list):
        self.store = store
        self.free = free
        self.ids = ids
        self.new_bytes = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=_IN_FLIGHT)
        self._thread = threading.Thread(target=self._run, name="dpl-chunk-put", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, buf = item
            if self.error is None:  # after an error: drain; the writer re-raises it
                try:
                    self.new_bytes += _store_batch(self.store, batch, self.ids)
                except BaseException as e:  # noqa: BLE001 - handed to the writer's thread
                    self.error = e
            del batch, item
            if len(buf) == _ROUND:
                self.free.put(buf)

    def submit(self, batch, buf) -> None:
        self._raise()
        self._queue.put((batch, buf))

    def finish(self) -> int:
        self._queue.put(None)
        self._thread.join()
        self._raise()
        return self.new_bytes

    def abandon(self) -> None:
        if self._thread.is_alive():
            self.error = self.error or RuntimeError("abandoned")  # store nothing more
            self._queue.put(None)

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            self._queue.put(None)  # stop the thread; nothing more will be stored
            raise error
