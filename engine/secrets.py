"""Secrets: named sets of key/value pairs a pipeline step can read, never stored with specs or logs.

Secrets live in the metadata database (`storage.metadata.secrets`), so a
store shared over PostgreSQL has one set of them, and no secret is a file in
the store directory.  On SQLite the database file is made readable by its
owner only once it holds a secret.  Stores made before that kept them as
`secrets/<name>.json`; those files are moved into the database the first
time the store's secrets are used, and deleted.

Specs name secrets the way Pachyderm's `transform.secrets` does (`name`,
`key`, `env_var`, `mount_path`), so specs, the spec history and `inspect-*`
output only ever hold names and keys; the values are looked up when a job
starts (`resolve_secrets`) and handed to the executor, and the job runner
scrubs the values of every secret the store holds out of the logs it keeps
(`secret_values`, `scrub`).

`mount_path` is a directory, as in Pachyderm (a Kubernetes secret volume):
the step sees one file per key under it, or only `<mount_path>/<key>` when
the spec names a key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from ..storage.errors import InvalidName
from ..storage.metadata import secrets as secrets_db
from ..storage.metadata.db import Database
from .errors import InvalidSpec, SecretExists, SecretNotFound

log = logging.getLogger("dpl")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")  # what Kubernetes allows in a secret's keys
OLD_DIR = "secrets"  # where stores before the secrets table kept them, one JSON file each


def scrub(text: str, values: list[str]) -> str:
    """`text` with every secret value replaced by ***; `values` longest first (as `secret_values` gives them)."""
    for value in values:
        if value and value in text:
            text = text.replace(value, "***")
    return text


class Secrets:
    """Secrets in the metadata database; `root` is the store directory, where older stores kept them as files."""

    def __init__(self, db: Database, root: Path):
        self.db, self.root = db, root

    def create_secret(self, name: str, data: dict[str, str], *, overwrite: bool = False) -> dict:
        """Store a secret; raise `SecretExists` unless `overwrite`."""
        _check_name(name)
        if not data:
            raise InvalidSpec(f"Secret {name!r} has no keys.", hint="Give at least one --from-literal KEY=VALUE or --from-file KEY=PATH.")
        for key, value in data.items():
            if not _KEY.match(key):
                raise InvalidName(f"{key!r} is not a valid key for secret {name!r}.", hint="Use letters, digits, '_', '-' and '.'.")
            if not isinstance(value, str):
                raise InvalidSpec(f"The value of key {key!r} of secret {name!r} is not text.")
        self._import_secret_files()
        secret = secrets_db.Secret(name, time.time(), dict(sorted(data.items())))
        self._restrict_metadata()  # before the first value is written
        with self.db.write() as tx:
            if not secrets_db.insert(tx, secret, overwrite=overwrite):
                raise SecretExists(f"Secret {name!r} already exists.", hint=f"Delete it first with `dpl delete-secret {name}`, or pass --overwrite.")
        return _public(secret)

    def _secret(self, name: str) -> secrets_db.Secret:
        _check_name(name)
        self._import_secret_files()
        secret = secrets_db.get(self.db, name)
        if secret is None:
            raise SecretNotFound(f"Secret {name!r} does not exist.", hint="See `dpl list-secret`, or create it with `dpl create-secret`.")
        return secret

    def list_secrets(self) -> list[dict]:
        """Every secret's name, keys and creation time (never the values)."""
        self._import_secret_files()
        return [_public(s) for s in secrets_db.list_all(self.db)]

    def inspect_secret(self, name: str) -> dict:
        return _public(self._secret(name))

    def delete_secret(self, name: str) -> None:
        _check_name(name)
        self._import_secret_files()
        with self.db.write() as tx:
            if not secrets_db.delete(tx, name):
                raise SecretNotFound(f"Secret {name!r} does not exist.", hint="See `dpl list-secret`.")

    def secret_values(self) -> list[str]:
        """Every value of every secret in the store, longest first: what logs must never show."""
        self._import_secret_files()
        return secrets_db.values(self.db)

    def resolve_secrets(self, spec) -> tuple[dict[str, str], dict[str, bytes]]:
        """The values a spec's `transform.secrets` asks for: (env var -> value, file path -> bytes)."""
        env: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for i, ref in enumerate(spec.transform.get("secrets", [])):
            where = f"spec.transform.secrets[{i}]"
            name, key = ref["name"], ref.get("key")
            if not ref.get("env_var") and not ref.get("mount_path"):
                raise InvalidSpec(f"{where}: secret {name!r} needs env_var or mount_path to reach the step.")
            try:
                data = self._secret(name).data
            except SecretNotFound:
                raise SecretNotFound(
                    f"Pipeline {spec.name!r} needs secret {name!r}, which does not exist.",
                    hint=f"Create it with `dpl create-secret {name} --from-literal KEY=VALUE`.",
                ) from None
            if key is not None and key not in data:
                raise SecretNotFound(
                    f"Pipeline {spec.name!r} needs key {key!r} of secret {name!r}, which has no such key.",
                    hint=f"Its keys: {', '.join(sorted(data))}.",
                )
            if ref.get("env_var"):
                if key is None:
                    raise InvalidSpec(f"{where}: env_var {ref['env_var']} needs a key (which value of secret {name!r} to use).")
                env[ref["env_var"]] = data[key]
            if ref.get("mount_path"):
                mount = ref["mount_path"].rstrip("/")
                if not mount.startswith("/") or mount == "" or mount == "/pfs" or mount.startswith("/pfs/"):
                    raise InvalidSpec(f"{where}.mount_path: {ref['mount_path']!r} must be an absolute path outside /pfs.")
                for k in [key] if key is not None else sorted(data):
                    files[f"{mount}/{k}"] = data[k].encode()
        return env, files

    # ------------------------------------------------------------ the old files

    def _import_secret_files(self) -> None:
        """Move secrets a store kept as files into the database, then delete the files.

        Any number of processes may do this at once: a secret already in the
        database wins (it is the newer one), and deleting a file twice is fine."""
        folder = self.root / OLD_DIR
        if not folder.is_dir():
            return
        found = []
        for path in sorted(folder.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                found.append((path, secrets_db.Secret(record["name"], float(record.get("created", time.time())), dict(record["data"]))))
            except FileNotFoundError:
                continue  # another process moved it
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("secret file %s cannot be read (%s): it stays where it is", path, e)
        if found:
            self._restrict_metadata()
            with self.db.write() as tx:
                for _, secret in found:
                    secrets_db.insert(tx, secret)
        for path, _ in found:
            path.unlink(missing_ok=True)
        for tmp in folder.glob(".*.tmp"):  # a write the old code never finished
            tmp.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass  # an unreadable file stays, and says so each time

    def _restrict_metadata(self) -> None:
        """A SQLite database holding secrets is for its owner's eyes only (as the secret files were)."""
        if self.db.dialect != "sqlite":
            return
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(self.db.url + suffix, 0o600)
            except FileNotFoundError:
                pass


def _check_name(name: str) -> None:
    if not _NAME.match(name or "") or name.startswith("."):
        raise InvalidName(f"{name!r} is not a valid secret name.", hint="Use letters, digits, '_', '-' and '.' (at most 63).")


def _public(secret: secrets_db.Secret) -> dict:
    return {"name": secret.name, "keys": secret.keys, "created": secret.created}
