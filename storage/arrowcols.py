"""Arrow columns from Python values, built from buffers.

`pa.array` and `pa.scalar` first ask whether their argument is a pandas
object, and asking imports pandas (0.3-1 s) into a process that may never
use it: a `dpl://` read inside DuckDB, a mount, a CLI read of a commit whose
index is a small layer.  These builders make the same arrays from buffers,
which asks nothing.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

import pyarrow as pa

from . import arrowcompute


def _offsets(lengths: list[int]) -> pa.Buffer:
    return pa.py_buffer(array("i", [0, *accumulate(lengths)]))


def _bitmap(flags: list[bool]) -> pa.Buffer:
    """Arrow's bit-packed form of `flags` (a bool array's values buffer: flag i is bit i).

    Packed by Python's int parser, not an Arrow cast: the first cast in a
    process costs ~1 ms, more than this on the few flags built here."""
    bits = "".join("1" if f else "0" for f in reversed(flags)) or "0"
    return pa.py_buffer(int(bits, 2).to_bytes((len(flags) + 7) // 8, "little"))


def strings(values: list[str]) -> pa.Array:
    encoded = [v.encode() for v in values]
    return pa.Array.from_buffers(pa.string(), len(values), [None, _offsets([len(e) for e in encoded]), pa.py_buffer(b"".join(encoded))])


def repeated(text: str, n: int) -> pa.Array:
    """`n` copies of `text` as a string column (one encoding, not n)."""
    data = text.encode()
    return fixed_width_strings(data * n, len(data), n)


def fixed_width_strings(data: bytes, width: int, n: int) -> pa.Array:
    """A string column of the `n` values of `width` bytes each laid end to end
    in `data` (valid UTF-8 each).  Arrow sums their offsets: a Python range of
    them costs ~50 ns a value, 5 ms for the hashes of a 100,000-file listing."""
    steps = array("i", [0]) + array("i", [width]) * n
    offsets = arrowcompute.cumulative_sum(pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(steps)]))
    return pa.Array.from_buffers(pa.string(), n, [None, offsets.buffers()[1], pa.py_buffer(data)])


def int64s(values: list[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values))])


def int32s(values: list[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(array("i", values))])


def bools(values: list[bool]) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, _bitmap(values)])


def fixed_binary(values: list[bytes | None], width: int) -> pa.Array:
    """A fixed-width binary column; None is null."""
    nulls = sum(v is None for v in values)
    validity = _bitmap([v is not None for v in values]) if nulls else None
    data = b"".join(bytes(width) if v is None else v for v in values)
    return pa.Array.from_buffers(pa.binary(width), len(values), [validity, pa.py_buffer(data)], null_count=nulls)


def lists(per_row: list[list], values: pa.Array, type: pa.ListType) -> pa.Array:
    """A list column whose row i holds the next len(per_row[i]) entries of `values`."""
    offsets = pa.Array.from_buffers(pa.int32(), len(per_row) + 1, [None, _offsets([len(r) for r in per_row])])
    return pa.ListArray.from_arrays(offsets, values, type=type)


def int64(value: int) -> pa.Scalar:
    """An int64 scalar, for a compute function's argument (a bare int would go through pa.scalar)."""
    return int64s([value])[0]


def string(value: str) -> pa.Scalar:
    return strings([value])[0]
