"""How engine values travel as JSON, and how long listings are paged.

Engine calls return dicts, dataclasses (`Commit`) and Arrow tables; the wire
carries plain JSON: bytes as hex (as `-o json` shows them), times as epoch
seconds (the client formats them exactly as the embedded CLI does).

A page is `{"items": [...], "next_cursor": str | null}`.  The cursor is
opaque to clients: base64 of JSON holding the offset reached and, for file
listings, the commit id the first page resolved, so that every page of a
listing reads the same commit even while the branch moves on.
"""

from __future__ import annotations

import base64
import dataclasses
import json

from ..storage.errors import DplError

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000


def plain(value):
    """`value` as JSON-ready data."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return plain(value.to_dict())
    if hasattr(value, "column_names"):  # an Arrow table
        return plain(value.to_pylist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value


class BadCursor(DplError):
    exit_code = 2


def encode_cursor(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> dict:
    if not text:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(state, dict) and isinstance(state.get("offset", 0), int) and state.get("offset", 0) >= 0:
            return state
    except (ValueError, UnicodeDecodeError):
        pass
    raise BadCursor("The cursor is not one this server gave out.", hint="Start the listing again without a cursor.")


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadCursor(f"limit must be between 1 and {MAX_LIMIT}, not {limit}.", hint="Page with the next_cursor of each answer.")
    return limit


def page(rows, limit: int | None, cursor: str | None, **pin) -> dict:
    """One page of `rows` (a list or an Arrow table), from the cursor's offset.

    `pin` is carried in the cursor (e.g. the commit a file listing resolved)."""
    limit = check_limit(limit)
    start = decode_cursor(cursor).get("offset", 0)
    total = rows.num_rows if hasattr(rows, "num_rows") else len(rows)
    chunk = rows.slice(start, limit) if hasattr(rows, "slice") else rows[start : start + limit]
    end = start + limit
    return {
        "items": plain(chunk),
        "next_cursor": encode_cursor({"offset": end, **pin}) if end < total else None,
    }


def page_newest_first(rows: list, limit: int | None, cursor: str | None, key: str = "created") -> dict:
    """A page of a newest-first listing (jobs, commits) that stays put while new
    rows arrive: the first page pins the newest `key` it saw, and later pages
    count their offset among the rows no newer than that."""
    state = decode_cursor(cursor)
    newest = state.get("newest")
    items = [plain(r) for r in rows]
    if newest is None:
        newest = max((r[key] for r in items if r.get(key) is not None), default=None)
    elif isinstance(newest, (int, float)):
        items = [r for r in items if r.get(key) is None or r[key] <= newest]
    else:
        raise BadCursor("The cursor is not one this server gave out.", hint="Start the listing again without a cursor.")
    return page(items, limit, cursor, newest=newest)
