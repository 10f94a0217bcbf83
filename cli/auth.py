"""`dpl auth ...` (users, tokens, roles, the audit log) and `dpl login`.

Against the store here, every command acts as admin (whoever can open the
store's files holds its data anyway); through a server (--address,
DPL_ADDRESS, `dpl connect`), as the token's user, and the server refuses
what that user's roles do not allow.  A token is printed once, on stdout,
when it is made; `dpl login` saves it for the address, in a file only its
owner can read.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import render
from .render import Output, ago, when
from ..storage.errors import DplError

OutputOpt = typer.Option(Output.table, "--output", "-o", help="table for people, json for programs.")
auth_app = typer.Typer(name="auth", help="Users, tokens, per-repo roles (reader, writer, owner) and admin, the audit log.",
                       no_args_is_help=True)


def _auth():
    from .main import store  # one place decides which store (or server) commands act on

    return store().auth


def _duration(text: str | None) -> float | None:
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except ValueError:
        raise DplError(f"--expires {text!r} is not a duration.", hint="Write e.g. 90d, 12h or 30m.") from None


def login(token: Optional[str]) -> None:
    from ..client import connect
    from ..client.config import address, save_token
    from .main import _address

    url = address(_address)
    if url is None:
        raise DplError("dpl login needs a server to log in to.", hint="Connect first (`dpl connect URL`), or pass --address URL.")
    if token is None:
        token = sys.stdin.readline().strip() if not sys.stdin.isatty() else typer.prompt("Token", hide_input=True).strip()
    with connect(url, token=token) as remote:
        me = remote.auth.whoami()  # refuse a token the server does not take, before saving it
    path = save_token(url, token)
    render.info(f"logged in to {url} as {me['user']}{' (admin)' if me['admin'] else ''} (token saved in {path})")


def register(app: typer.Typer) -> None:
    @app.command("login")
    def login_command(token: Optional[str] = typer.Argument(None, help="The token (else read from stdin, or asked for).")):
        """Log in to the server dpl acts on: check the token there and save it for that address."""
        login(token)

    app.add_typer(auth_app, name="auth")


@auth_app.command("activate")
def activate(
    user: str = typer.Option("admin", "--user", "-u", help="The first user's name (an admin)."),
    store: Optional[str] = typer.Option(None, "--store", help="The store (default: DPL_STORE, or the one found from here)."),
):
    """Turn auth on for the store here: make the first admin and print its token (once) on stdout."""
    from ..engine import Store

    made = Store.open(store).auth.activate(user)
    sys.stdout.write(made["token"] + "\n")
    render.info(f"auth is on: {user} is an admin; keep the token above (`dpl auth login` with it), it is not stored in clear")


@auth_app.command("login")
def login_sub(token: Optional[str] = typer.Argument(None, help="The token (else read from stdin, or asked for).")):
    """Log in to the server dpl acts on (as `dpl login`)."""
    login(token)


@auth_app.command("logout")
def logout():
    """Forget the token saved for the server dpl acts on."""
    from ..client.config import address, save_token
    from .main import _address

    url = address(_address)
    if url is not None:
        save_token(url, None)
    render.info(f"logged out of {url}" if url else "not connected to a server: nothing to forget")


@auth_app.command("whoami")
def whoami(output: Output = OutputOpt):
    """Who dpl acts as, and your roles."""
    me = _auth().whoami()
    if output == Output.json:
        render.emit_json(me)
        return
    if me["user"] is None:
        sys.stdout.write("the store here, as admin" + ("" if me["auth"] else " (auth is off)") + "\n")
        return
    roles = ", ".join(f"{repo}: {role}" for repo, role in sorted(me["roles"].items())) or "no repo roles"
    sys.stdout.write(f"{me['user']}{' (admin)' if me['admin'] else ''}: {roles}\n")


@auth_app.command("create-user")
def create_user(name: str, admin: bool = typer.Option(False, "--admin", help="Make the user an admin (everything, users and secrets too).")):
    """Create a user (admins only); then give them a token with `dpl auth create-token --user NAME`."""
    _auth().create_user(name, admin=admin)
    render.info(f"created user {name}{' (admin)' if admin else ''}")


@auth_app.command("delete-user")
def delete_user(name: str):
    """Delete a user, their tokens and roles (admins only)."""
    _auth().delete_user(name)
    render.info(f"deleted user {name}")


@auth_app.command("list-users")
def list_users(output: Output = OutputOpt):
    """Users, whether admin, their token count and repo roles (admins only)."""
    rows = [{**u, "roles": ", ".join(f"{r}: {role}" for r, role in sorted(u["roles"].items()))} for u in _auth().list_users()]
    render.table(rows, [("name", "NAME", None), ("admin", "ADMIN", None), ("tokens", "TOKENS", None), ("roles", "ROLES", None),
                        ("created", "CREATED", ago)], output)


@auth_app.command("create-token")
def create_token(
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Whose token (default: yours; others' need admin)."),
    description: str = typer.Option("", "--description", "-d"),
    expires: Optional[str] = typer.Option(None, "--expires", help="Lifetime, e.g. 90d, 12h (default: until revoked)."),
):
    """Make a token and print it (once) on stdout; its S3 gateway keys go to stderr."""
    made = _auth().create_token(user, description=description, expires_in=_duration(expires))
    sys.stdout.write(made["token"] + "\n")
    render.info(f"token {made['id']} for {made['user']}; S3 gateway keys: access {made['s3_access_key']}, secret {made['s3_secret_key']}")


@auth_app.command("list-tokens")
def list_tokens(user: Optional[str] = typer.Option(None, "--user", "-u"), output: Output = OutputOpt):
    """Token ids, users and dates (never a token)."""
    render.table(_auth().list_tokens(user), [("id", "ID", None), ("user", "USER", None), ("description", "DESCRIPTION", None),
                                             ("created", "CREATED", ago), ("expires", "EXPIRES", when)], output)


@auth_app.command("revoke-token")
def revoke_token(token: str = typer.Argument(..., metavar="ID_OR_TOKEN")):
    """Revoke a token (yours, or anyone's as admin): the next request with it is refused."""
    _auth().revoke_token(token)
    render.info("revoked")


@auth_app.command("grant")
def grant(user: str, role: str = typer.Argument(..., metavar="ROLE", help="reader, writer or owner"), repo: str = typer.Argument(...)):
    """Give USER the ROLE on REPO (owners of REPO and admins)."""
    _auth().grant(repo, user, role)
    render.info(f"{user} is {role} of {repo}")


@auth_app.command("revoke")
def revoke(user: str, repo: str):
    """Take USER's role on REPO away (owners of REPO and admins)."""
    _auth().revoke(repo, user)
    render.info(f"{user} has no role on {repo} now")


@auth_app.command("list-roles")
def list_roles(repo: str, output: Output = OutputOpt):
    """Who holds which role on REPO."""
    render.table(_auth().roles(repo), [("user", "USER", None), ("role", "ROLE", None)], output)


@auth_app.command("audit")
def audit(
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Only this user's writes."),
    limit: int = typer.Option(100, "--limit", "-n"),
    output: Output = OutputOpt,
):
    """The audit log of writes through the server, newest first: who, what, when, and the answer (admins only)."""
    render.table(_auth().audit_log(user=user, limit=limit), [("at", "WHEN", when), ("user", "USER", None), ("action", "WHAT", None),
                                                              ("target", "QUERY", None), ("status", "STATUS", None)], output)
