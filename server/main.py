"""Running `dpl serve`: open the store, bind the address, run uvicorn until a signal.

Uvicorn owns SIGTERM and SIGINT: it stops accepting connections, finishes
the requests in flight, then runs the app's shutdown, which stops the
scheduler's process (see `schedproc.SchedulerProcess.stop`).  If a job
outlives the grace period, that process exits anyway and the job resumes
at the next start.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

from .observe import log_event
from ..storage.errors import DplError

DEFAULT_LISTEN = "127.0.0.1:6650"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise DplError(f"--listen {text!r} is not HOST:PORT.", hint=f"Write e.g. --listen {DEFAULT_LISTEN} (port 0 picks a free one).")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls(cert: str | None, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise DplError("TLS needs both --tls-cert and --tls-key, or neither.", hint="Give the certificate and its private key (PEM files).")
    for path in (cert, key):
        if path and not os.path.isfile(path):
            raise DplError(f"{path} is not a file.", hint="Give --tls-cert and --tls-key as paths to PEM files.")


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """Uvicorn's server, minus re-raising SIGTERM after its graceful stop:
        a stop that lost nothing exits 0, as service managers expect."""

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    return Server


def serve(store_path: str | None, listen: str = DEFAULT_LISTEN, *, executor: str | None = None, poll: float = 2.0,
          grace: float = 30.0, schedule: bool = True, workers: int = 1, s3: str | None = None, s3_keys=None,
          tls_cert: str | None = None, tls_key: str | None = None) -> None:
    host, port = parse_listen(listen)
    _check_tls(tls_cert, tls_key)
    import uvicorn

    from .app import create_app
    from .observe import route_logging
    from ..engine import Store

    try:
        store = Store.open(store_path)
    except (DplError, OSError):
        if is_loopback(host):
            raise
        store = None  # no store, so no users: the refusal below says what a server beyond loopback needs
    if not is_loopback(host) and (store is None or not store.auth.active()):
        # Without users every request is let in: only this machine may talk to such a server.
        raise DplError(f"dpl serve listens only on a loopback address while the store has no users, not {host!r}: "
                       "beyond this machine it needs auth.",
                       hint="Turn auth on with `dpl auth activate` on this machine (it makes an admin and prints its token), "
                       "or listen on 127.0.0.1.")
    route_logging()

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by every accepted connection: a streamed answer's headers and
    # body go out as separate writes, and Nagle would hold the body back for
    # the client's delayed ACK (~40 ms on each small get-file).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise DplError(f"Cannot listen on {host}:{port}: {e.strerror}.", hint="Choose another --listen port, or stop what holds it.") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    app = create_app(store, executor=executor, poll=poll, schedule=schedule, grace=grace, workers=workers)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=grace,
                            server_header=False, ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    try:
        config.load()  # reads the certificate now, so a bad one is one sentence, not uvicorn's traceback
    except (OSError, ValueError) as e:
        raise DplError(f"The TLS certificate or key cannot be used ({getattr(e, 'strerror', None) or e}).",
                       hint="Give --tls-cert a PEM certificate (chain) and --tls-key its unencrypted PEM key.") from None
    if tls_cert is None and not is_loopback(host):
        log_event("server.warning", message="Serving beyond loopback without TLS: tokens travel in clear. Give --tls-cert and --tls-key.")
    server = _server_class()(config)
    gateway = None
    if s3:  # the S3 gateway on its own port, in a thread; it wakes the scheduler as its commits land
        from .s3auth import Keys
        from .s3serve import start as start_gateway

        gateway = start_gateway(store, s3, s3_keys or Keys.configured(), on_commit=app.state.scheduler.wake)
    log_event("server.listening", address=f"{'https' if tls_cert else 'http'}://{host if ':' not in host else f'[{host}]'}:{bound}", pid=os.getpid())
    server.run(sockets=[sock])
    if gateway is not None:
        gateway.stop()
    sys.stderr.flush()
