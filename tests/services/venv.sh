#!/usr/bin/env bash
# Create the virtualenv and install dpl with every optional backend, the
# exporters (hera, kfp) and the test tools.  Idempotent: a second run only checks.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[all,test,export]'

# setuptools' editable install finds dpl through an import hook that each
# Python start loads (pathlib, importlib.util, ...): ~30 ms on every `dpl`
# call, a fifth of a small command's budget (issue 12), which a user's
# `pip install dpl` never pays.  A link named dpl to this checkout, on a path
# the install's .pth file now adds, is the same package found the plain way,
# and edits to the checkout still take effect at once.
REPO=$(cd "$(dirname "$0")/../.." && pwd)
LINKS=$(mkdir -p "$VENV/dpl-src" && cd "$VENV/dpl-src" && pwd)
ln -sfn "$REPO" "$LINKS/dpl"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for pth in "$SITE"/__editable__.dpl-*.pth; do
    echo "$LINKS" > "$pth"
done
"$VENV/bin/python" -c 'import dpl.cli, dpl.engine, dpl.storage.metadata, dpl.server.console' # the link resolves every package
