"""Uploads that send only what the store lacks: the server's half.

A client chunks its files with the same CDC as `ChunkWriter` (so the same
bytes give the same chunk ids on both sides), asks which ids are `missing`,
sends those (`put_chunk` names each by its own hash, never by the sender's
word), then lands the files from their rows (`Files.land_rows`, which calls
`rows_table`).  Every file is read back and checked against its size and
hash before it lands, so a client can neither name bytes it does not have
nor give a file a false hash.

Chunks sent but never landed are unreferenced objects, which gc removes as
it removes those of a killed put.
"""

from __future__ import annotations

import pyarrow as pa
import xxhash

from ..storage import index
from ..storage.chunkstore import ChunkStore, object_id
from ..storage.errors import DplError, InvalidPath
from ..storage.paths import normalize_path


def missing(chunks: ChunkStore, ids: list[bytes]) -> list[bytes]:
    """The ids of `ids` the chunk store lacks (each once, in order)."""
    return [oid for oid in dict.fromkeys(ids) if not chunks.has(oid)]


def put_chunk(chunks: ChunkStore, data) -> bytes:
    oid = object_id(data)
    chunks.put(oid, data)
    return oid


def rows_table(chunks: ChunkStore, reader, rows: list[dict]) -> pa.Table:
    """An index layer of `rows` (path, size, hash, refs of chunk/offset/length), each file checked against its bytes."""
    paths, sizes, hashes, refs = [], [], [], []
    for row in rows:
        path = normalize_path(row["path"])
        hasher, size = xxhash.xxh3_128(), 0
        for ref in row["refs"]:
            if not chunks.has(ref["chunk"]):
                raise DplError(f"Chunk {ref['chunk'].hex()} of {path} is not in the store; nothing was committed.",
                               hint="Send the chunks the server lacks first, then land the files again.")
            piece = reader.chunk_slice(ref)
            if ref["offset"] < 0 or ref["length"] < 0 or len(piece) != ref["length"]:
                raise InvalidPath(f"{path}: a chunk reference reaches past its chunk; nothing was committed.", hint="Upload the file again.")
            hasher.update(piece)
            size += ref["length"]
        if size != row["size"] or hasher.digest() != row["hash"]:
            raise InvalidPath(f"{path}: its bytes do not match the size and hash sent with it; nothing was committed.",
                              hint="The file changed while it was uploaded, or the upload was damaged: upload it again.")
        paths.append(path)
        sizes.append(size)
        hashes.append(row["hash"])
        refs.append(row["refs"])
    if len(set(paths)) != len(paths):
        raise InvalidPath("The upload names one path twice; nothing was committed.", hint="Send each file once.")
    return index.make_table(paths, sizes, hashes, refs)
