#!/usr/bin/env bash
# Install the servers bench/compare measures edgekv against: Redis, etcd and NATS
# (with JetStream), from Debian's packages. Called by `make bench`; safe to run
# again (installed packages are left alone; apt runs only for missing ones).
#
# Versions are pinned to the ones the committed results were measured with. When
# apt no longer serves a pinned version (a security update replaced it), the
# current candidate is installed instead and the script says so. A package that
# cannot be installed at all (no root, no apt, no network) is reported and
# skipped: bench/compare then marks that system "skipped" with the reason.
#
# The outcome, one line per package ("name<TAB>installed VERSION" or
# "name<TAB>skipped: WHY"), goes to $BENCH_PEERS_STAMP (default
# .venv/.bench-peers), which bench/compare prints with its results.
set -u

PINS=(
    "redis-server=5:7.0.15-1~deb12u10"
    "etcd-server=3.4.23-4+b4"
    "nats-server=2.9.10-1+b3"
)
STAMP=${BENCH_PEERS_STAMP:-.venv/.bench-peers}
mkdir -p "$(dirname "$STAMP")"
: > "$STAMP.tmp"

installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null \
        | awk '$1 == "install" && $3 == "installed" { print $4 }'
}

missing=()
for pin in "${PINS[@]}"; do
    name=${pin%%=*}
    [ -n "$(installed_version "$name")" ] || missing+=("$pin")
done

why=""
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        why="not root: apt-get install needs root (run scripts/bench_peers.sh as root)"
    elif ! command -v apt-get > /dev/null; then
        why="no apt-get on this machine"
    else
        export DEBIAN_FRONTEND=noninteractive
        echo "bench_peers: installing ${missing[*]}"
        apt-get update -qq > /dev/null 2>&1 || echo "bench_peers: apt-get update failed; trying the cached lists"
        for pin in "${missing[@]}"; do
            name=${pin%%=*}
            if ! apt-get install -y -qq --no-install-recommends "$pin" > /dev/null 2>&1; then
                echo "bench_peers: $pin is not served any more; installing the current $name"
                apt-get install -y -qq --no-install-recommends "$name" > /dev/null 2>&1 \
                    || echo "bench_peers: apt-get install $name failed"
            fi
        done
    fi
fi

for pin in "${PINS[@]}"; do
    name=${pin%%=*}
    version=$(installed_version "$name")
    if [ -n "$version" ]; then
        [ "$version" = "${pin#*=}" ] || echo "bench_peers: $name $version, not the pinned ${pin#*=}"
        printf '%s\tinstalled %s\n' "$name" "$version" >> "$STAMP.tmp"
    else
        printf '%s\tskipped: %s\n' "$name" "${why:-apt-get install $name failed}" >> "$STAMP.tmp"
    fi
done
mv "$STAMP.tmp" "$STAMP"
cat "$STAMP"
