#!/usr/bin/env bash
# Install the npm packages the JavaScript tests use, each project pinned with integrity
# hashes in its package-lock.json: tests/js (Bluesky's @atproto/api, for
# tests/test_atproto_api_js.py) and tests/atproto_pds (Bluesky's reference PDS with a
# local PLC, @atproto/dev-env, for tests/test_atproto_pds_e2e.py). Arguments name the
# projects (default: all). Quiet and quick when a project's node_modules already
# matches its lock file; otherwise `npm ci` from the lock file (integrity-checked; no
# package install scripts run but better-sqlite3's build, below),
# with npm's cache kept in <project>/.npm-cache (ignored by git).
# Node.js and npm come from the machine; where they are missing this installs
# Debian's (needs root, as on CI), and exits non-zero if it cannot, so `make test`
# fails loudly rather than skipping the test.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$#" -eq 0 ]; then
    set -- tests/js tests/atproto_pds
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ensure-npm-packages: installing Debian's nodejs and npm" >&2
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "ensure-npm-packages: Node.js or npm is missing and this user cannot run apt-get" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq >/dev/null
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

for project in "$@"; do
    cd "$root/$project"
    # npm ci writes node_modules/.package-lock.json; when it is newer than the lock
    # file, the install is the one the lock file asks for.
    if ! [ node_modules/.package-lock.json -nt package-lock.json ]; then
        echo "ensure-npm-packages: npm ci in $project" >&2
        npm ci --ignore-scripts --cache .npm-cache --no-audit --no-fund --loglevel=error >/dev/null
    fi
    # The one install script the PDS needs: better-sqlite3's native module, compiled
    # (node-gyp, a few minutes) from the C source its integrity-checked tarball holds.
    if [ -d node_modules/better-sqlite3 ] \
        && ! [ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
        echo "ensure-npm-packages: building better-sqlite3 in $project" >&2
        npm rebuild better-sqlite3 --cache .npm-cache --loglevel=error >/dev/null
    fi
done
