"""`dpl serve`: the engine behind an HTTP API, with a scheduler that runs jobs as commits land.

`app.create_app(store)` builds the ASGI application; `main.serve` runs it on
uvicorn.  Handlers hold no engine logic: each calls one public method of the
Store, so the embedded CLI and the server can never disagree.
"""
