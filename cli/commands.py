"""Which module defines each command, so that a call imports only its own.

The commands of the store, repos and files are cli/main.py's; every other
command lives in a module of its own (commits, pipelines, provenance...),
imported when one of its commands runs, or when help lists them all.
"""

from __future__ import annotations

import typer

# The commands of the other command modules, which `app_for` imports only
# when one of theirs runs (or for help); test_bench checks this table
# against what each module registers.
MODULE_COMMANDS = {
    "commits": ("start-commit", "finish-commit", "list-commit", "inspect-commit", "create-branch", "inspect-branch",
                "subscribe-commit", "start-transaction", "finish-transaction", "delete-transaction", "inspect-transaction",
                "list-branch", "delete-branch"),
    "maintenance": ("fsck", "delete-commit", "squash-commit", "gc"),
    "pipelines": ("create-pipeline", "update-pipeline", "list-pipeline", "inspect-pipeline", "delete-pipeline",
                  "stop-pipeline", "start-pipeline", "list-job", "inspect-job", "list-datum", "inspect-datum", "logs",
                  "run", "run-cron", "wait-commit"),
    "control": ("wait-job", "stop-job", "delete-job", "restart-datum", "validate-pipeline", "edit-pipeline", "rerun-pipeline"),
    "provenance": ("provenance", "subvenance", "why", "draw-dag"),
    "secrets": ("create-secret", "list-secret", "delete-secret"),
    "serve": ("serve", "s3-gateway", "connect", "disconnect"),
    "mount": ("mount", "unmount"),
    "ui": ("ui",),
    "auth": ("login",),  # and the `dpl auth ...` group
    "debug": ("debug-datum",),
    "verify": ("verify",),
    "watch": ("watch",),
    "metrics": ("metrics",),
    "sweep": (),  # the `dpl sweep ...` group
    "export": ("worker",),  # and the `dpl export argo|kfp` group
}
_registered: set[tuple[int, str]] = set()  # (id of an app, module) already added


def register(app: typer.Typer, *modules: str) -> None:
    """Add the commands of these modules to `app`, each module once."""
    for name in modules:
        if (id(app), name) not in _registered:
            command_module(name).register(app)
            _registered.add((id(app), name))


def command_module(name: str):
    # Spelled out, not imported by name, so that static tools see the arrows.
    if name == "commits":
        from . import commits

        return commits
    if name == "maintenance":
        from . import maintenance

        return maintenance
    if name == "pipelines":
        from . import pipelines

        return pipelines
    if name == "control":
        from . import control

        return control
    if name == "secrets":
        from . import secrets

        return secrets
    if name == "serve":
        from . import serve

        return serve
    if name == "mount":
        from . import mount

        return mount
    if name == "auth":
        from . import auth

        return auth
    if name == "ui":
        from . import ui

        return ui
    if name == "debug":
        from . import debug

        return debug
    if name == "verify":
        from . import verify

        return verify
    if name == "watch":
        from . import watch

        return watch
    if name == "metrics":
        from . import metrics

        return metrics
    if name == "sweep":
        from . import sweep

        return sweep
    if name == "export":
        from . import export

        return export
    from . import provenance

    return provenance


def app_for(app: typer.Typer, argv: list[str]) -> typer.Typer:
    """The app with only the command this call runs, when it names one.

    Typer turns every registered command into a click command on each call
    (~50 of them: about a third of what importing typer costs); one call
    runs one, and imports only the command module that defines it.  `dpl`,
    `dpl --help` and an unknown name get the whole app, so help lists every
    command and a typo gets click's suggestions.
    """
    # The first word that is not an option, nor the value of --address (the one global option that takes one).
    name = next((a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--address")), None)
    register(app, *(module for module, names in MODULE_COMMANDS.items() if name in names))
    chosen = [c for c in app.registered_commands if (c.name or c.callback.__name__.lower().replace("_", "-")) == name]
    if len(chosen) != 1:
        register(app, *MODULE_COMMANDS)
        return app
    import copy

    one = copy.copy(app)
    one.registered_commands = chosen
    return one
