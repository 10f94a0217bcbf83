"""Secrets: named sets of key/value pairs a pipeline step can read, never stored with specs or logs.

A secret is `secrets/<name>.json` in the store directory, readable by its
owner only (mode 0600, in a 0700 directory) and replaced atomically.  Specs
name secrets the way Pachyderm's `transform.secrets` does (`name`, `key`,
`env_var`, `mount_path`), so specs, the spec history and `inspect-*` output
only ever hold names and keys; the values are looked up when a job starts
(`resolve_secrets`) and handed to the executor, and the job runner scrubs
them out of the logs it keeps.

`mount_path` is a directory, as in Pachyderm (a Kubernetes secret volume):
the step sees one file per key under it, or only `<mount_path>/<key>` when
the spec names a key.
"""

from __future__ import annotations

import json
import os
import re
import time

from ..storage.errors import InvalidName
from .errors import InvalidSpec, SecretExists, SecretNotFound

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")  # what Kubernetes allows in a secret's keys


class SecretOps:
    """Mixed into `Store`."""

    @property
    def _secret_dir(self):
        return self.root / "secrets"

    def _secret_path(self, name: str):
        if not _NAME.match(name or "") or name.startswith("."):
            raise InvalidName(f"{name!r} is not a valid secret name.", hint="Use letters, digits, '_', '-' and '.' (at most 63).")
        return self._secret_dir / f"{name}.json"

    def create_secret(self, name: str, data: dict[str, str], *, overwrite: bool = False) -> dict:
        """Store a secret; raise `SecretExists` unless `overwrite`."""
        path = self._secret_path(name)
        if not data:
            raise InvalidSpec(f"Secret {name!r} has no keys.", hint="Give at least one --from-literal KEY=VALUE or --from-file KEY=PATH.")
        for key, value in data.items():
            if not _KEY.match(key):
                raise InvalidName(f"{key!r} is not a valid key for secret {name!r}.", hint="Use letters, digits, '_', '-' and '.'.")
            if not isinstance(value, str):
                raise InvalidSpec(f"The value of key {key!r} of secret {name!r} is not text.")
        if path.exists() and not overwrite:
            raise SecretExists(f"Secret {name!r} already exists.", hint=f"Delete it first with `dpl delete-secret {name}`, or pass --overwrite.")
        self._secret_dir.mkdir(mode=0o700, exist_ok=True)
        record = {"name": name, "created": time.time(), "data": dict(sorted(data.items()))}
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return _public(record)

    def _secret(self, name: str) -> dict:
        path = self._secret_path(name)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise SecretNotFound(f"Secret {name!r} does not exist.", hint="See `dpl list-secret`, or create it with `dpl create-secret`.") from None

    def list_secrets(self) -> list[dict]:
        """Every secret's name, keys and creation time (never the values)."""
        if not self._secret_dir.is_dir():
            return []
        names = sorted(p.name[: -len(".json")] for p in self._secret_dir.glob("*.json") if not p.name.startswith("."))
        return [_public(self._secret(n)) for n in names]

    def inspect_secret(self, name: str) -> dict:
        return _public(self._secret(name))

    def delete_secret(self, name: str) -> None:
        path = self._secret_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise SecretNotFound(f"Secret {name!r} does not exist.", hint="See `dpl list-secret`.") from None

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
                data = self._secret(name)["data"]
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


def _public(record: dict) -> dict:
    return {"name": record["name"], "keys": sorted(record["data"]), "created": record["created"]}
