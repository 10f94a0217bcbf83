"""The dpl client: the Store's methods, over HTTP to a `dpl serve` process.

    import dpl.client
    store = dpl.client.connect("http://127.0.0.1:6650")
    store.put_bytes("images", "master", {"/a.png": data})

A package beside `cli/` rather than a module of the engine: it implements
the engine's interface without any of the engine's parts (no metadata
database, no chunk store, no executors), and what it shares with them is
only the storage layer's types (`Commit`) and the error classes of both
layers, so that a refusal raises the same exception through either door.
"""

from __future__ import annotations


def connect(url: str, token: str | None = None):
    """A `RemoteStore` for the server at `url` (token: for when servers require auth)."""
    from .remote import RemoteStore

    return RemoteStore(url, token=token)
