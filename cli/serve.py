"""`dpl serve`, and pointing the command line at a server: `dpl connect`, `dpl disconnect`."""

from __future__ import annotations

from typing import Optional

import typer

from . import render


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        listen: str = typer.Option("127.0.0.1:6650", "--listen", "-l", help="HOST:PORT to listen on (beyond loopback only once `dpl auth activate` turned auth on; port 0 picks a free one)."),
        store: Optional[str] = typer.Option(None, "--store", help="The store to serve (default: DPL_STORE, or the one found from here)."),
        executor: Optional[str] = typer.Option(None, "--executor", "-x", help="Run datums on this executor (default: the spec's, else the store's)."),
        poll: float = typer.Option(2.0, "--poll", help="Seconds between looks for work other processes left (commits through this server start jobs at once)."),
        grace: float = typer.Option(30.0, "--grace", help="On SIGTERM, seconds to let a running job finish before leaving it to resume at the next start."),
        workers: int = typer.Option(1, "--workers", "-w", help="Jobs of independent pipelines to run at once."),
        s3: Optional[str] = typer.Option(None, "--s3", help="Also serve the S3 gateway on HOST:PORT (buckets BRANCH.REPO)."),
        s3_access_key: Optional[str] = typer.Option(None, "--s3-access-key", envvar="DPL_S3_ACCESS_KEY", help="A key pair for the S3 gateway that acts as an admin (users sign with their tokens' S3 keys)."),
        s3_secret_key: Optional[str] = typer.Option(None, "--s3-secret-key", envvar="DPL_S3_SECRET_KEY", help="The secret key of --s3-access-key."),
        tls_cert: Optional[str] = typer.Option(None, "--tls-cert", envvar="DPL_TLS_CERT", help="Serve HTTPS with this PEM certificate (chain)."),
        tls_key: Optional[str] = typer.Option(None, "--tls-key", envvar="DPL_TLS_KEY", help="The certificate's PEM private key."),
    ):
        """Serve a store over HTTP (/api/v1, OpenAPI at /docs) and run its jobs as commits land."""
        from ..server.main import serve as run_server

        keys = None
        if s3:
            from ..server.s3auth import Keys

            keys = Keys.configured(s3_access_key, s3_secret_key)
        run_server(store, listen, executor=executor, poll=poll, grace=grace, workers=workers, s3=s3, s3_keys=keys,
                   tls_cert=tls_cert, tls_key=tls_key)

    @app.command("s3-gateway")
    def s3_gateway(
        listen: str = typer.Option("127.0.0.1:9000", "--listen", "-l", help="HOST:PORT for the S3 API (port 0 picks a free one)."),
        store: Optional[str] = typer.Option(None, "--store", help="The store to serve (default: DPL_STORE, or the one found from here)."),
        access_key: Optional[str] = typer.Option(None, "--access-key", envvar="DPL_S3_ACCESS_KEY", help="A key pair that acts as an admin (users sign with their tokens' S3 keys)."),
        secret_key: Optional[str] = typer.Option(None, "--secret-key", envvar="DPL_S3_SECRET_KEY", help="The secret key of --access-key."),
    ):
        """Serve only the S3 gateway over a store (no API, no scheduler: run jobs with `dpl run`)."""
        from ..server.s3auth import Keys
        from ..server.s3serve import serve_gateway

        serve_gateway(store, listen, Keys.configured(access_key, secret_key))

    @app.command("connect")
    def connect(url: str = typer.Argument(..., metavar="URL", help="The server, e.g. http://127.0.0.1:6650.")):
        """Make every `dpl` command act on the server at URL (saved in ~/.config/dpl/config.json)."""
        from ..client import connect as open_remote
        from ..client.config import read_config, write_config

        if "://" not in url:
            url = "http://" + url
        from ..engine.auth import Unauthenticated

        login = None
        with open_remote(url) as remote:
            try:
                remote.list_repos()  # refuse an address that does not answer as a dpl server
            except Unauthenticated as e:  # a dpl server with auth on: connect, then log in
                login = e.message
        path = write_config({**read_config(), "address": url})
        render.info(f"dpl commands now act on {url} (saved in {path}; `dpl disconnect` goes back to the local store)")
        if login:
            render.info(f"{login} Log in with `dpl auth login`.")

    @app.command("disconnect")
    def disconnect():
        """Make `dpl` commands act on the local store again."""
        from ..client.config import read_config, write_config

        config = read_config()
        config.pop("address", None)
        write_config(config)
        render.info("dpl commands now act on the local store")
