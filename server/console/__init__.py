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


def mount(app) -> None:
    from fastapi.staticfiles import StaticFiles

    from . import session, views_data, views_work

    app.add_middleware(session.CookieAuth)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(views_work.router)
    app.include_router(views_data.router)
