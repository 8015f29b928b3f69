#!/usr/bin/env bash
# Make sure Debian's nftables (the `nft` command) is installed, for the cluster
# harness's namespace mode (node/cluster/netns.py: partitions and packet loss are
# nftables rules) and its test, tests/test_cluster_netns.py. Quiet and quick when
# `nft` is present; when it is missing and this user can run apt-get (root, or
# sudo), install it. Without root it does nothing and exits 0: namespace mode needs
# root anyway, and its test skips, saying why, where the machine forbids namespaces.
set -euo pipefail

if command -v nft >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "ensure-nftables: nft is missing and this user cannot run apt-get; the namespace-mode test will skip" >&2
    exit 0
fi

echo "ensure-nftables: installing Debian's nftables" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends nftables >/dev/null

if ! command -v nft >/dev/null 2>&1; then
    echo "ensure-nftables: apt-get ran but nft is still missing" >&2
    exit 1
fi
