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
