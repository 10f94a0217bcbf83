"""One renderer for people (rich tables) and one for programs (`-o json`).

Commands hand over rows (dicts) and column specs; nothing else in the CLI
formats output.  When stdout is not a terminal, tables are printed as plain
aligned text so that `dpl list-file ... | grep` and a 100,000-row listing
stay fast.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sys
import time
from typing import Any, Callable, Iterable, Sequence


class Output(str, enum.Enum):
    table = "table"
    json = "json"


Column = tuple[str, str, Callable[[Any], str] | None]  # key, header, formatter


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def parse_size(text: str) -> int:
    """`2G`, `500M`, `1.5GiB` or a byte count, in binary units."""
    from ..storage.errors import DplError

    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (clean[:-1], clean[-1]) if clean and clean[-1] in units else (clean, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1
    if value <= 0:
        raise DplError(f"{text!r} is not a size.", hint="Write a size such as 2G, 500M or 1048576.")
    return int(value)


def ago(t: float | None) -> str:
    if not t:
        return "-"
    seconds = max(0, time.time() - t)
    for unit, span in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= span:
            n = int(seconds // span)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{int(seconds)} seconds ago"


def when(t: float | None) -> str:
    """A moment, past or to come: `2026-11-26 10:12:00 UTC (in 5 minutes)`."""
    if not t:
        return "-"
    stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if t <= time.time():
        return f"{stamp} (due now)"
    return f"{stamp} (in {ago(2 * time.time() - t).removesuffix(' ago')})"


def short(commit_id: str | None) -> str:
    return commit_id[:12] if commit_id else "-"


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value > 1e9:  # epoch seconds
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def table(rows, columns: Sequence[Column], output: Output, *, title: str | None = None) -> None:
    """Rows as dicts, or an Arrow table (a big listing: read column by column)."""
    arrow = hasattr(rows, "column_names")
    if output == Output.json:
        emit_json(rows.to_pylist() if arrow else list(rows))
        return
    headers = [header for _, header, _ in columns]
    if arrow:
        n = rows.num_rows
        if not (sys.stdout.isatty() and n < 5000):
            _plain_columns(headers, [_arrow_cells(rows, key, fmt) for key, _, fmt in columns])
            return
        values = [rows.column(key).to_pylist() if key in rows.column_names else [None] * n for key, _, _ in columns]
        cols = [list(map(_memo(fmt), v)) if fmt else list(map(_plain, v)) for (_, _, fmt), v in zip(columns, values)]
        cells = [list(row) for row in zip(*cols)]
    else:
        cells = [[(fmt(r.get(key)) if fmt else _plain(r.get(key))) for key, _, fmt in columns] for r in rows]
    if sys.stdout.isatty() and len(cells) < 5000:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, header_style="bold", box=None, pad_edge=False)
        for h in headers:
            t.add_column(h, overflow="fold")
        for row in cells:
            t.add_row(*row)
        Console().print(t)
        return
    _plain_table(headers, cells)


def _plain(value) -> str:
    return "-" if value is None else str(value)


def _memo(fmt):
    """`fmt` remembered per value: a listing repeats sizes and times a lot."""
    cache: dict = {}

    def cached(value):
        try:
            return cache[value]
        except KeyError:
            out = cache[value] = fmt(value)
            return out
        except TypeError:  # unhashable
            return fmt(value)

    return cached


def _arrow_cells(rows, key: str, fmt):
    """One column of an Arrow table as an Arrow string array of cells.

    A string column stays in Arrow ("-" for nulls); any other goes through
    its formatter (or str) in Python, once per distinct value."""
    import pyarrow as pa

    from ..storage import arrowcols
    from ..storage import arrowcompute as pc  # not pyarrow.compute: its import costs more than a listing

    # Text arguments are typed Arrow scalars (arrowcols): a bare str has its
    # type inferred, and the first inference imports dateutil (~5 ms).
    if key not in rows.column_names:
        return arrowcols.repeated("-", rows.num_rows)
    column = rows.column(key)
    if fmt is None and pa.types.is_string(column.type):
        return (pc.coalesce(column, arrowcols.string("-")) if column.null_count else column).combine_chunks()
    # Each distinct value is formatted once, in Python; Arrow spreads the
    # cells back over the rows (a listing repeats sizes and times a lot).
    column = column.combine_chunks()
    distinct = pc.unique(column)
    cells = pa.array([(fmt or _plain)(v) for v in distinct.to_pylist()], pa.string())
    return pc.take(cells, pc.index_in(column, value_set=distinct))


def _plain_columns(headers: list[str], cols) -> None:
    """Aligned plain text from Arrow columns of cells, padded and joined by
    Arrow (100,000 rows in milliseconds instead of a Python loop per cell)."""
    from ..storage import arrowcols
    from ..storage import arrowcompute as pc

    widths = [max(len(h), pc.max(pc.utf8_length(col)).as_py() or 0) for h, col in zip(headers, cols)]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    sys.stdout.write(header + "\n")
    if not len(cols[0]):
        return
    # A cell padded with the two spaces after it; a line is its cells, then a newline.
    padded = [pc.utf8_rpad(col, width=w + 2) for col, w in zip(cols[:-1], widths)]
    last, newline, nothing = cols[-1], arrowcols.string("\n"), arrowcols.string("")
    if pc.min(pc.binary_length(last)).as_py() and not pc.any(pc.ends_with(last, pattern=" ")).as_py():
        lines = pc.binary_join_element_wise(*padded, last, newline, nothing)
    else:  # a line could end in spaces, which are trimmed (as str.rstrip does for a row of dicts)
        lines = pc.binary_join_element_wise(pc.utf8_rtrim(pc.binary_join_element_wise(*padded, last, nothing), characters=" "),
                                            newline, nothing)
    # A string array's values lie end to end in one buffer: that is the text.
    offsets = memoryview(lines.buffers()[1]).cast("i")
    body = memoryview(lines.buffers()[2])[offsets[lines.offset] : offsets[lines.offset + len(lines)]]
    out = getattr(sys.stdout, "buffer", None)
    if out is None or (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
        sys.stdout.write(str(body, "utf-8"))
        return
    # Out as UTF-8 bytes, as they lie: decoding them to a str and encoding it back costs more than the join.
    sys.stdout.flush()
    out.write(body)


def _plain_table(headers: list[str], cells: Iterable[list[str]]) -> None:
    cells = list(cells)
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
    sys.stdout.write("\n".join(lines) + "\n")


def record(data: dict, output: Output, fields: Sequence[Column] | None = None) -> None:
    """One object: key/value lines for people, an object for programs."""
    if output == Output.json:
        emit_json(data)
        return
    fields = fields or [(k, k.replace("_", " ").capitalize(), None) for k in data]
    width = max(len(h) for _, h, _ in fields)
    for key, header, fmt in fields:
        value = data.get(key)
        text = fmt(value) if fmt else (json.dumps(value) if isinstance(value, (list, dict)) else _plain(value))
        sys.stdout.write(f"{header + ':':<{width + 1}} {text}\n")


def count(items, noun: str) -> str:
    """`1 commit`, `3 commits`."""
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


class ProgressLine:
    """A rich progress line on stderr, only for people watching a terminal."""

    def __init__(self, what: str):
        self.what = what
        self.live = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=True)
        self.live.start()
        task = self.live.add_task(self.what)

        def update(files: int, nbytes: int):
            self.live.update(task, description=f"{self.what}: {files} files, {size(nbytes)}")

        return update

    def __exit__(self, *exc):
        if self.live:
            self.live.stop()


def removed(result: dict) -> None:
    """What a delete-commit or delete-job took away, and the recompute it started."""
    for c in result["deleted"]:
        info(f"deleted commit {c}")
    for m in result.get("moved", []):
        info(f"branch {m['repo']}@{m['branch']} now points at {m['to'] or 'no commit'}")
    for j in result["jobs"]:
        info(f"deleted job {j}")
    if result.get("recompute"):
        # The output the deleted commit stood for must be made again: a wave of jobs waits for `dpl run`.
        info(f"recompute wave {result['recompute']} started (`dpl run` runs it)")


def info(message: str) -> None:
    """A message for people, on stderr so stdout stays data."""
    sys.stderr.write(message + "\n")
