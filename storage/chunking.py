"""Content-defined chunking of a stream of files into stored chunks.

All files of one write are laid end to end in a single byte stream which
FastCDC cuts at content-defined boundaries (about 1 MiB apart).  Many small
files therefore share a chunk, a big file spans many, and because the cut
points depend only on nearby bytes, an edit in the middle of a big file
changes only the chunks around it: the rest dedupe against what is stored.

A file is remembered as its (start, length) in the stream; once the stream is
closed, `refs()` turns those ranges into per-file lists of
(chunk id, offset, length) in one vectorised pass.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyfastcdc import FastCDC

from dpl.storage.chunkstore import ChunkStore, object_id

AVG_CHUNK = 1 << 20
# Cut only once this much is buffered: the last cut in a buffer is provisional
# (the buffer end is not a content boundary) and is retried with more data.
_BUFFER = 16 << 20
BLOCK = 8 << 20

REF_TYPE = pa.struct([("chunk", pa.binary(16)), ("offset", pa.int64()), ("length", pa.int64())])
REFS_TYPE = pa.list_(REF_TYPE)


class ChunkWriter:
    def __init__(self, store: ChunkStore, avg_size: int = AVG_CHUNK):
        self.store = store
        self._cdc = FastCDC(avg_size, min_size=avg_size // 4, max_size=avg_size * 4)
        self._buf = bytearray()
        self._pos = 0  # bytes written to the stream so far
        self._chunk_starts: list[int] = []
        self._chunk_lengths: list[int] = []
        self._chunk_ids: list[bytes] = []
        self.bytes_written = 0  # new bytes that reached the store
        self.closed = False

    def write(self, data) -> int:
        """Append `data` to the stream; return its start offset."""
        start = self._pos
        self._buf += data
        self._pos += len(data)
        if len(self._buf) >= _BUFFER:
            self._cut(final=False)
        return start

    def write_file(self, f) -> tuple[int, int]:
        """Append a whole open binary file; return (start, length)."""
        start = self._pos
        while True:
            block = f.read(BLOCK)
            if not block:
                break
            self.write(block)
        return start, self._pos - start

    def _cut(self, final: bool) -> None:
        cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(self._buf)]
        if not final:
            cuts = cuts[:-1]
        consumed = 0
        with memoryview(self._buf) as view:
            for offset, length in cuts:
                with view[offset : offset + length] as data:
                    oid = object_id(data)
                    if self.store.put(oid, data):
                        self.bytes_written += length
                self._chunk_starts.append(self._pos - len(self._buf) + offset)
                self._chunk_lengths.append(length)
                self._chunk_ids.append(oid)
                consumed = offset + length
        del self._buf[:consumed]

    def close(self) -> None:
        if not self.closed:
            if self._buf:
                self._cut(final=True)
            self.closed = True

    def refs(self, starts, lengths) -> pa.ListArray:
        """Per-file chunk references for files at stream ranges (start, length)."""
        self.close()
        fs = np.asarray(starts, dtype=np.int64)
        fl = np.asarray(lengths, dtype=np.int64)
        if not self._chunk_starts:
            return pa.ListArray.from_arrays(pa.array(np.zeros(len(fs) + 1, np.int32)), pa.array([], REF_TYPE))
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
        ids = pa.array(self._chunk_ids, pa.binary(16)).take(pa.array(chunk))
        values = pa.StructArray.from_arrays(
            [ids, pa.array(ref_start - cs[chunk]), pa.array(ref_end - ref_start)], fields=list(REF_TYPE)
        )
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, type=REFS_TYPE)
