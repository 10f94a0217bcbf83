"""dpl: data-versioned pipelines.

    import dpl
    store = dpl.connect("http://127.0.0.1:6650", token="dpl_...")  # a `dpl serve` process
    store.put_bytes("images", "master", {"/a.png": data})

`connect` returns a `RemoteStore`, which has the methods of the embedded
`dpl.engine.Store`: one interface, two doors.  Nothing is imported here
until it is called, so `import dpl.cli` (every `dpl` command) pays nothing.
"""

from __future__ import annotations


def connect(url: str, token: str | None = None):
    """A `RemoteStore` for the `dpl serve` at `url`; `token` when the server requires auth
    (else DPL_TOKEN, or the one `dpl auth login` saved for that address)."""
    from .client import connect as _connect

    return _connect(url, token=token)


__all__ = ["connect"]
