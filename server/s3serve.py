"""Running the S3 gateway: beside `dpl serve` (its own uvicorn, in a thread) or alone (`dpl s3-gateway`).

Beside the API it runs in a thread of the server's process: one store, one
metadata connection pool, and a commit landed through S3 wakes the same
scheduler.  Uvicorn installs signal handlers only in the main thread, so
the API's server keeps SIGTERM; when it stops, it stops the gateway.
"""

from __future__ import annotations

import os
import socket
import threading

from .observe import log_event
from .s3auth import Keys
from ..storage.errors import DplError


class Running:
    """A gateway serving in a thread; `stop()` ends it after the requests in flight."""

    def __init__(self, server, thread: threading.Thread):
        self.server, self.thread = server, thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def bind(store, listen: str, keys: Keys) -> tuple[socket.socket, str]:
    from .main import is_loopback, parse_listen

    host, port = parse_listen(listen)
    if keys.open and not store.auth.active() and not is_loopback(host):
        raise DplError(f"The S3 gateway on {host!r} needs users or a key pair: without them anyone who reaches it may write.",
                       hint="Turn auth on (`dpl auth activate`), or give --s3-access-key and --s3-secret-key, or listen on 127.0.0.1.")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise DplError(f"Cannot listen on {host}:{port} for S3: {e.strerror}.", hint="Choose another --s3 port, or stop what holds it.") from None
    sock.listen(128)
    return sock, f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"


def _server(store, sock, keys: Keys, on_commit):
    import uvicorn

    from .s3gateway import Gateway

    gateway = Gateway(store, keys, on_commit=on_commit)
    config = uvicorn.Config(gateway.app, log_config=None, access_log=False, lifespan="off", server_header=False)
    return uvicorn.Server(config)


def start(store, listen: str, keys: Keys, *, on_commit=None) -> Running:
    """The gateway in a thread of this process (for `dpl serve --s3`)."""
    sock, address = bind(store, listen, keys)
    server = _server(store, sock, keys, on_commit)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="s3-gateway", daemon=True)
    thread.start()
    log_event("s3.listening", address=address, auth=_auth_mode(store, keys), pid=os.getpid())
    return Running(server, thread)


def serve_gateway(store_path: str | None, listen: str, keys: Keys) -> None:
    """Only the gateway, in the foreground (`dpl s3-gateway`): no API, no scheduler."""
    from .observe import route_logging
    from ..engine import Store

    route_logging()
    from .spool import sweep

    store = Store.open(store_path)
    sock, address = bind(store, listen, keys)
    server = _server(store, sock, keys, None)
    swept = sweep(store.root)  # what a killed gateway was receiving: never committed
    log_event("s3.listening", address=address, auth=_auth_mode(store, keys), pid=os.getpid(), swept_uploads=swept)
    server.run(sockets=[sock])


def _auth_mode(store, keys: Keys) -> str:
    users = "users' token keys" if store.auth.active() else None
    pair = None if keys.open else "the configured key pair"
    return " and ".join(m for m in (users, pair) if m) or "open (loopback, no users)"
