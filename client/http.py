"""The client's HTTP: one keep-alive connection pool to `dpl serve`, on urllib3.

urllib3 (what requests and boto3 stand on) costs about half of httpx's CPU
per request (0.45 against 0.93 ms for a small get-file on this machine),
and a client beside 15 others on a small machine takes that CPU from the
server.  This module is the whole surface the client uses: `Http.send`
returns an `Answer`, and failures to reach or keep the server are `Unreachable`
or `Broken`, for `remote.py` to word.
"""

from __future__ import annotations

import json as jsonlib
import socket
from typing import Any, Iterator
from urllib.parse import quote, urlencode

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, LocationParseError, NewConnectionError, SSLError


class Unreachable(Exception):
    """No connection could be made (refused, timed out, an untrusted certificate)."""


class Broken(Exception):
    """The connection was made, then lost before the answer was whole."""


class BadAddress(ValueError):
    """The server's address is no http(s) URL."""


class Answer:
    """A response: its status, its body (read whole, or streamed)."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, method: str, path: str, stream: bool):
        self.raw, self.method, self.path = raw, method, path
        self.status_code = raw.status
        self.reason_phrase = raw.reason or ""
        self._stream = stream

    @property
    def content(self) -> bytes:
        return self.raw.data

    def json(self) -> Any:
        return jsonlib.loads(self.raw.data)

    def iter_bytes(self, size: int) -> Iterator[bytes]:
        try:
            yield from self.raw.stream(size)
        except HTTPError as e:
            raise Broken(f"{type(e).__name__}") from None

    def read(self) -> bytes:
        """The rest of a streamed body, kept for `content` and `json()` (an error's sentence)."""
        return self.raw.read(cache_content=True)

    def close(self) -> None:
        if self._stream:
            self.raw.drain_conn()
            self.raw.release_conn()


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as FastAPI reads a bool
    return str(value)


def query(params: dict) -> str:
    """`k=v&...` for the set values; a list repeats its key (as `?path=a&path=b`)."""
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else (value,):
            pairs.append((key, _text(v)))
    return urlencode(pairs, quote_via=quote)


class Http:
    def __init__(self, base_url: str, *, headers: dict, timeout: float):
        # No Nagle: a request's headers and body are separate writes, and the
        # second would wait for the server's delayed ACK (~40 ms a put).
        options = HTTPConnection.default_socket_options + [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        try:
            url = urllib3.util.parse_url(base_url)
        except LocationParseError:
            raise BadAddress(base_url) from None
        if url.scheme not in (None, "http", "https") or not url.host:
            raise BadAddress(base_url)
        self.prefix = url.path or ""
        self.pool = urllib3.connection_from_url(base_url, maxsize=8, block=False, headers=headers, retries=False,
                                                timeout=urllib3.Timeout(connect=10.0, read=timeout), socket_options=options)

    def close(self) -> None:
        self.pool.close()

    def send(self, method: str, path: str, *, params: dict | None = None, json: Any = None, content=None,
             headers: dict | None = None, stream: bool = False) -> Answer:
        url = self.prefix + path
        qs = query(params or {})
        if qs:
            url += "?" + qs
        headers = dict(headers or {})
        body = content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        chunked = body is not None and not isinstance(body, (bytes, bytearray, memoryview))  # a generator streams
        try:
            raw = self.pool.urlopen(method, url, body=body, headers={**self.pool.headers, **headers}, chunked=chunked,
                                    preload_content=not stream, redirect=False, release_conn=not stream)
        except (NewConnectionError, ConnectTimeoutError, SSLError) as e:
            raise Unreachable(type(e).__name__) from None
        except HTTPError as e:
            raise Broken(type(e).__name__) from None
        return Answer(raw, method, path, stream)
