#!/usr/bin/env bash
# Install the npm packages tests/test_atproto_api_js.py drives a node with (Bluesky's
# @atproto/api, pinned with integrity hashes in tests/js/package-lock.json). Quiet and
# quick when tests/js/node_modules already matches the lock file; otherwise `npm ci`
# from the lock file (integrity-checked; no package install scripts run), with npm's
# cache kept in tests/js/.npm-cache (ignored by git).
# Node.js and npm come from the machine; where they are missing this installs
# Debian's (needs root, as on CI), and exits non-zero if it cannot, so `make test`
# fails loudly rather than skipping the test.
set -euo pipefail

cd "$(dirname "$0")/../tests/js"

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

# npm ci writes node_modules/.package-lock.json; when it is newer than the lock file,
# the install is the one the lock file asks for.
if [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
echo "ensure-npm-packages: npm ci in tests/js" >&2
npm ci --ignore-scripts --cache .npm-cache --no-audit --no-fund --loglevel=error >/dev/null
