"""The console: server-rendered pages over the same Store calls as /api/v1.

`mount(app)` adds the pages (`/`, `/pipelines/...`, `/jobs/...`,
`/repos/...`, `/lineage`, `/search`) and the static assets (our CSS and
JS, and the vendored libraries under static/vendor, listed in VENDOR.md)
to a `dpl serve` app.  Pages are Jinja2 templates; htmx swaps fragments
(pages of a list) and a job page follows its job by the API's server-sent
events.  Writes go to the API's own routes, so a page grants nothing the API
would not: templates show write buttons only where `can_write` is true
(session.py: the same tokens and roles as the API).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def assets_digest() -> str:
    """A short digest of the static assets, which changes whenever one of them does."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted((HERE / "static").rglob("*")):
        if p.is_file():
            h.update(p.relative_to(HERE).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def mount(app) -> None:
    from fastapi.staticfiles import StaticFiles

    from . import session, views_data, views_work

    app.add_middleware(session.CookieAuth)
    class Assets(StaticFiles):
        # Pages name each asset with ASSETS (a digest of them all) in its URL, so
        # a browser may keep it without asking again: a page then paints without
        # waiting on a round trip per script and stylesheet.
        async def get_response(self, path, scope):
            response = await super().get_response(path, scope)
            if response.status_code == 200:
                response.headers["Cache-Control"] = "public, max-age=604800, immutable"
            return response

    app.mount("/console/static", Assets(directory=HERE / "static"), name="console-static")
    app.include_router(views_work.router)
    app.include_router(views_data.router)
