#!/usr/bin/env bash
# The JavaScript side, installed by the project and by nothing else: `npm ci` from
# package-lock.json (exact versions) into ./node_modules, then the ES client
# generated from proto/ (protoc-gen-es through grpcio-tools' protoc) into js/gen/,
# then the examples type-checked (tsc) and bundled with esbuild (examples/*/dist/).
#
# Idempotent and fast (about 30 ms) when done: each step runs only when what it
# reads changed. Safe to run concurrently (flock). Needs node and npm on PATH,
# and the venv of `make build` for protoc.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "npm_setup: '$tool' is not on PATH; install Node.js 20+ with npm" >&2; exit 1; }
done
[ -x "$PY" ] || { echo "npm_setup: $PY is missing; run 'make build' first (protoc comes from grpcio-tools)" >&2; exit 1; }

mkdir -p build
exec 9>build/npm-setup.lock
flock 9

# Three stamps, each the hash of what its step reads: the install (package.json,
# the lockfile, this script), the generated code (+ the protos) and the bundles
# (+ the examples' sources). `make clean` removes js/gen and the bundles, not node_modules.
INSTALLED=node_modules/.edgekv-installed
GENERATED=js/gen/.stamp
BUNDLED=js/gen/.bundled
hash() { cat "$@" | sha256sum | cut -d' ' -f1; }

want=$(hash package.json package-lock.json "$0")
if [ "$(cat "$INSTALLED" 2>/dev/null)" != "$want" ]; then
    start=$SECONDS
    # esbuild and workerd find their binaries in their platform packages
    # (@esbuild/linux-x64, @cloudflare/workerd-linux-64): no install script needed.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$want" > "$INSTALLED"
    echo "npm_setup: npm ci took $((SECONDS - start))s"
fi

want=$(hash "$INSTALLED" proto/edgekv/v1/*.proto)
if [ "$(cat "$GENERATED" 2>/dev/null)" != "$want" ]; then
    rm -rf js/gen
    mkdir -p js/gen
    "$PY" -m grpc_tools.protoc \
        --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
        --es_out=js/gen --es_opt=target=js+dts,import_extension=js \
        -Iproto proto/edgekv/v1/common.proto proto/edgekv/v1/kv.proto proto/edgekv/v1/cluster.proto
    echo "$want" > "$GENERATED"
fi

want=$(hash "$GENERATED" examples/tsconfig.json examples/edge-function/*.ts examples/browser/*.ts)
if [ "$(cat "$BUNDLED" 2>/dev/null)" != "$want" ]; then
    # esbuild strips types without checking them: tsc checks them first (about 4 s).
    node_modules/.bin/tsc -p examples/tsconfig.json
    ESBUILD=node_modules/.bin/esbuild
    # The Worker: one ES module, for workerd (and Cloudflare Workers).
    "$ESBUILD" examples/edge-function/worker.ts --bundle --format=esm --platform=browser \
        --conditions=workerd,worker --target=es2022 --log-level=warning \
        --outfile=examples/edge-function/dist/worker.js
    # The browser page's script (an ES module that Node can import as well).
    "$ESBUILD" examples/browser/page.ts --bundle --format=esm --platform=browser \
        --target=es2022 --log-level=warning --outfile=examples/browser/dist/page.js
    echo "$want" > "$BUNDLED"
fi
