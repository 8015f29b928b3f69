#!/usr/bin/env bash
# Make sure Debian's headless Chromium and its ChromeDriver are installed, for the
# browser test in tests/test_web.py. Quiet and quick when both are present; when one is
# missing, install both with apt-get (needs root, as on CI). Exits non-zero if it
# cannot, so `make test` fails loudly rather than skipping the browser test.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi

echo "ensure-chromium: installing Debian's chromium and chromium-driver" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-chromium: chromium is missing and this user cannot run apt-get" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "ensure-chromium: apt-get ran but /usr/bin/chromium or /usr/bin/chromedriver is still missing" >&2
    exit 1
fi
