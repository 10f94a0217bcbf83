"""`dpl ui`: the console on the local store, on a loopback address, in the browser."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        store: Optional[str] = typer.Option(None, "--store", help="The store to show (default: DPL_STORE, or the one found from here)."),
        listen: str = typer.Option("127.0.0.1:0", "--listen", "-l", help="HOST:PORT on this machine (port 0, the default, picks a free one)."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Only print the console's URL; open no browser."),
    ):
        """Open the console (DAG, jobs, data, lineage) on the local store: a `dpl serve` on loopback, running its jobs too."""
        from ..server.main import parse_listen, serve

        host, port = parse_listen(listen)
        if port == 0:
            port = _free_port(host)  # known before serving, so the URL can be printed and opened
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        sys.stdout.write(f"dpl console: {url}\n")
        sys.stdout.flush()
        if not no_browser:
            threading.Thread(target=_open_when_up, args=(host, port, url), daemon=True).start()
        serve(store, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _open_when_up(host: str, port: int, url: str) -> None:
    """Open the browser once the server accepts connections (not before, or it shows an error page)."""
    import webbrowser

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    webbrowser.open(url)
