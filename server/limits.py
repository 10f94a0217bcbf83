"""A bound on the bodies the server holds in memory: larger ones get a 413 in one sentence.

File bytes stream to disk (`/content`, `/upload`, `/chunks`: their size is
the disk's business, and a full disk is a 507); every other body (JSON
mostly) is read whole by the framework before a handler runs, so without a
bound one request could take all the server's memory.  The bound is checked
on the announced Content-Length before anything is read, and while a
chunked body arrives; a body within it is handed on unchanged.
"""

from __future__ import annotations

import json
import re

# The largest JSON body: the file rows of a negotiated upload's `land`
# (~150 bytes a file) for some 900,000 files in one commit.
MAX_BODY = 128 << 20

_STREAMED = re.compile(r"^/api/v1/repos/[^/]+/(content|upload|chunks)$")


class BodyLimit:
    """ASGI wrapper refusing bodies over `limit` bytes on the routes that read them whole."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _STREAMED.match(scope["path"]):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send, length.decode("latin-1"))
        # Read the body here, counting, then hand it on as one message.
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                return await self.app(scope, _replay([message], receive), send)
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.limit:
                return await self._refuse(send, None)
            if not message.get("more_body"):
                break
        body = {"type": "http.request", "body": b"".join(parts), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send, length: str | None) -> None:
        said = f"of {length} bytes " if length and length.isdigit() else ""
        error = (f"The request body {said}is larger than the {self.limit >> 20} MiB the server reads into memory."
                 if said or length is None else f"Content-Length {length!r} is not a number of bytes.")
        status = 413 if said or length is None else 400
        payload = json.dumps({"error": error, "hint": "Send file bytes through put-file (streamed), or split the request.",
                              "type": "BodyTooLarge" if status == 413 else "InvalidRequest"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed
