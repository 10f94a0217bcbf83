"""What every console page shares: templates, the `can_write` flag, paging, errors.

`render` puts the user looking (None while auth is off) and `can_write`
into every template's context; a view showing a write button passes its
own `can_write` (see session.can_write).

A DplError on a page (an unknown repo, a bad ref) is rendered as a page
holding its sentence and hint, with the status the API would answer.
"""

from __future__ import annotations

import datetime
import functools
import json

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import FileSystemBytecodeCache

from . import HERE, assets_digest
from ..wire import decode_cursor, encode_cursor, plain
from ...storage.errors import DplError

PAGE = 50  # rows per page of every list: nothing sends a whole list to the browser

templates = Jinja2Templates(directory=str(HERE / "templates"))


class _CompiledTemplates(FileSystemBytecodeCache):
    """Compiled templates kept for the next `dpl serve` (in jinja2's per-user cache
    directory, keyed by each template's source): a server would otherwise compile a
    page's templates on its first view, 0.1-0.3 s before that page could paint."""

    def dump_bytecode(self, bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass  # a read-only temp directory: the next server compiles them again


def _bytecode_cache() -> FileSystemBytecodeCache | None:
    try:
        return _CompiledTemplates()
    except (OSError, RuntimeError):  # no private temp directory to keep them in
        return None


templates.env.bytecode_cache = _bytecode_cache()


# The filters take what a row may lack while its job runs (None, or a key not there yet).
def _when(epoch) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def code_label(code) -> str:
    """A few words for the `code` of a job (the host files its step ran: {files, hash}), of a
    spec version (the git work tree around the spec: {repo, head, dirty}), or both merged;
    "" when there is nothing to name (a Docker step, a spec outside git), so that no page
    shows a bare "code"."""
    if not isinstance(code, dict):
        return ""
    parts = []
    if code.get("hash"):
        names = sorted(code.get("files") or {})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown} ({code['hash'][:12]})" if shown else code["hash"][:12])
    if code.get("repo"):
        head = code.get("head")
        parts.append(f"git {head[:12]}{' (dirty)' if code.get('dirty') else ''}" if head else "git (no commit yet)")
    return ", ".join(parts)


templates.env.globals["assets"] = assets_digest()  # ?v= on every asset URL (see mount)
templates.env.filters.update(when=_when, seconds=_seconds, size=_size, code=code_label, tojson_pretty=lambda v: json.dumps(plain(v), indent=2))


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    from .session import can_write, principal

    try:
        context.setdefault("user", principal(request))
    except DplError:
        context.setdefault("user", None)  # an error page about the token itself
    if "can_write" not in context:
        context["can_write"] = context["user"] is None or can_write(request)
    return templates.TemplateResponse(request, template, context, status_code=status)


def page_of(rows, cursor: str | None, limit: int = PAGE) -> tuple[list, str | None]:
    """One page of `rows` (a list or an Arrow table) from an opaque cursor (the API's cursor format)."""
    start = decode_cursor(cursor).get("offset", 0)
    end = start + limit
    if hasattr(rows, "num_rows"):  # an Arrow table: sliced before it becomes Python objects
        return plain(rows.slice(start, limit)), (encode_cursor({"offset": end}) if end < rows.num_rows else None)
    return plain(rows[start:end]), (encode_cursor({"offset": end}) if end < len(rows) else None)


def html_errors(view):
    """Sign in first (under auth), and render a DplError raised by `view` as an error page."""

    @functools.wraps(view)
    def wrapped(request: Request, *args, **kw):
        from .session import principal

        try:
            principal(request)  # every page needs a signed-in user once auth is on
            return view(request, *args, **kw)
        except DplError as error:
            from ..app import error_status

            return render(request, "error.html", status=error_status(error), error=error.message, hint=error.hint,
                          kind=type(error).__name__)

    return wrapped


def store(request: Request):
    return request.app.state.store
