"""Re-deriving damaged or missing chunks (part of `fsck --repair`, engine/repair.py).

A chunk holds pieces of files, and a file with the same content hash may be
stored whole elsewhere: in other chunks (the same file put in another
write, a pipeline that copied it) or in local directories given with
`--from`.  A bad chunk is rebuilt from those pieces when every byte of it is
found and the result hashes to the chunk's id; one that cannot be rebuilt
is moved to `quarantine/`, so that reads say it is missing and putting the
same bytes again restores it.  Nothing here invents a byte.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ..storage import index
from ..storage.chunkstore import object_id
from ..storage.errors import Corruption
from ..storage.metadata import commits as commit_rows
from ..storage.metadata import datums as datum_rows

QUARANTINE = "quarantine"


def _all_tables(store) -> list[tuple[str, pa.Table]]:
    """Every readable table of file rows: commit layers and datum output batches."""
    ids: dict[bytes, int | None] = {}
    for c in commit_rows.all_commits(store.db):
        for layer in c.layers + c.delta:
            ids[layer.id] = layer.rows
    for use in datum_rows.batch_uses(store.db):
        ids.setdefault(bytes.fromhex(use.batch), None)
    out = []
    for oid, rows in ids.items():
        try:
            table = index.read_table(store.chunks, oid) if rows is None else index.read_layer(store.chunks, index.Layer(oid, rows))
        except Corruption:
            continue
        if "refs" in table.column_names:
            out.append((oid.hex(), table))
    return out


def rederive_chunks(store, bad: set[bytes], sources, fixed: list[str]) -> None:
    """Rebuild or quarantine each chunk of `bad`, saying in `fixed` what was done."""
    tables = _all_tables(store)
    # Which files live in each bad chunk (a file's refs give its offset in the chunk
    # and, summed, the offset of that piece in the file), and where else each
    # file content (hash, size) is stored whole, outside the bad chunks.
    needs: dict[bytes, list[tuple[int, int, bytes, int, int]]] = {c: [] for c in bad}
    copies: dict[tuple[bytes, int], list[dict]] = {}
    for _, table in tables:
        flat = pc.list_flatten(table["refs"])
        if not len(flat):
            continue
        hit_any = pc.is_in(pc.struct_field(flat, "chunk"), value_set=pa.array(list(bad), pa.binary(16)))
        owners = pc.list_parent_indices(table["refs"]).to_numpy()
        hit_rows = set(owners[hit_any.to_numpy(zero_copy_only=False)].tolist())
        for i, row in enumerate(table.select(["hash", "size", "refs"]).to_pylist()):
            if i in hit_rows:
                pos = 0
                for ref in row["refs"]:
                    if ref["chunk"] in bad:
                        needs[ref["chunk"]].append((ref["offset"], ref["length"], row["hash"], row["size"], pos))
                    pos += ref["length"]
            elif row["size"]:
                copies.setdefault((row["hash"], row["size"]), []).append(row)
    wanted = {(h, s) for pieces in needs.values() for _, _, h, s, _ in pieces}
    local = _scan_sources(sources, wanted - set(copies)) if sources else {}

    reader = store.chunks
    for chunk in sorted(bad):
        pieces = needs[chunk]
        data = _assemble(store, pieces, copies, local) if pieces else None
        if data is not None and object_id(data) == chunk:
            _replace(store, chunk, data)
            fixed.append(f"Re-derived chunk {chunk.hex()} from other copies of the same file bytes.")
            continue
        if reader.has(chunk):
            quarantine(store, chunk)
            fixed.append(
                f"Moved damaged chunk {chunk.hex()} to {QUARANTINE}/: reads now say it is missing, and putting the same bytes again restores it."
            )


def _scan_sources(sources, wanted: set[tuple[bytes, int]]) -> dict[tuple[bytes, int], str]:
    """Local files whose (content hash, size) is one a chunk needs."""
    sizes = {s for _, s in wanted}
    found = {}
    for src in sources:
        for dirpath, _, files in os.walk(src):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                if size not in sizes:
                    continue
                h = xxhash.xxh3_128()
                with open(path, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                if (h.digest(), size) in wanted:
                    found[(h.digest(), size)] = path
    return found


def _assemble(store, pieces, copies, local) -> bytes | None:
    end = max(off + length for off, length, *_ in pieces)
    buf = bytearray(end)
    covered = np.zeros(end, bool)
    for off, length, h, size, file_pos in pieces:
        if covered[off : off + length].all():
            continue
        piece = _file_range(store, h, size, file_pos, length, copies, local)
        if piece is None:
            continue
        buf[off : off + length] = piece
        covered[off : off + length] = True
    return bytes(buf) if covered.all() else None


def _file_range(store, h: bytes, size: int, start: int, length: int, copies, local) -> bytes | None:
    path = local.get((h, size))
    if path is not None:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(length)
        return data if len(data) == length else None
    for row in copies.get((h, size), ()):
        try:
            whole = b"".join(bytes(store.files.chunk_slice(r)) for r in row["refs"])
        except Corruption:
            continue
        if xxhash.xxh3_128_digest(whole) == h:
            return whole[start : start + length]
    return None


def _replace(store, chunk: bytes, data: bytes) -> None:
    if store.chunks.has(chunk):
        store.chunks.delete(chunk)
    store.chunks.put(chunk, data)
    store.chunks.sync()


def quarantine(store, chunk: bytes) -> None:
    directory = store.root / QUARANTINE
    directory.mkdir(exist_ok=True)
    try:
        data = store.chunks.get(chunk)
    except Corruption:
        return
    (directory / chunk.hex()).write_bytes(data)
    store.chunks.delete(chunk)
