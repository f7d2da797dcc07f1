#!/usr/bin/env bash
# What `make torture` needs for real network partitions (tests/torture/netns.py):
# iproute2 (ip netns, veth, bridge) and nftables (nft), from Debian's packages.
# Installs only what is missing, and only as root; otherwise says what the torture
# suite will do instead (partitions through the fault proxies).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "torture: ${missing[*]} missing (needs root and apt-get to install);" \
         "partitions go through the fault proxies" >&2
    exit 0
fi
echo "torture: installing ${missing[*]} (Debian packages) for real network partitions" >&2
if ! { apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null; }; then
    echo "torture: could not install ${missing[*]}; partitions go through the fault proxies" >&2
fi
