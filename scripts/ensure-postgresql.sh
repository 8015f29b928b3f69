#!/usr/bin/env bash
# Make sure a PostgreSQL server's binaries (initdb, pg_ctl, postgres) are installed, for
# the storage tests that `make test` runs on PostgreSQL (tests/pg.py starts a
# throwaway server from them, on a Unix socket in a temp dir). Quiet and quick when
# they are present; otherwise install Debian's `postgresql` with apt-get (needs root,
# as on CI). Exits non-zero if it cannot, so `make test` fails loudly rather than
# skipping the PostgreSQL run. Debian's package also makes the `postgres` user the
# tests run the server as when they run as root.
set -euo pipefail

have_server() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_server; then
    exit 0
fi

echo "ensure-postgresql: installing Debian's postgresql" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-postgresql: the PostgreSQL server is missing and this user cannot run apt-get" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! have_server; then
    echo "ensure-postgresql: apt-get ran but initdb is still missing" >&2
    exit 1
fi
