#!/usr/bin/env bash
# The JavaScript side, installed by the project and by nothing else: `npm ci` from
# package-lock.json (exact versions) into ./node_modules, then the ES client
# generated from proto/ (protoc-gen-es through grpcio-tools' protoc) into js/gen/,
# then the examples bundled with esbuild (examples/*/dist/).
#
# Idempotent and fast when done: install and codegen run only when the lockfile,
# the protos or this script changed (a stamp in node_modules holds their hash);
# the bundles when a source changed. Safe to run concurrently
# (flock). Needs node and npm on PATH, and the venv of `make build` for protoc.
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

STAMP=node_modules/.edgekv-setup
want=$(cat package.json package-lock.json proto/edgekv/v1/*.proto "$0" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    start=$SECONDS
    # esbuild and workerd find their binaries in their platform packages
    # (@esbuild/linux-x64, @cloudflare/workerd-linux-64): no install script needed.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    rm -rf js/gen
    mkdir -p js/gen
    "$PY" -m grpc_tools.protoc \
        --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
        --es_out=js/gen --es_opt=target=js+dts,import_extension=js \
        -Iproto proto/edgekv/v1/common.proto proto/edgekv/v1/kv.proto proto/edgekv/v1/cluster.proto
    echo "$want" > "$STAMP"
    echo "npm_setup: installed node_modules and generated js/gen in $((SECONDS - start))s"
fi

# The bundles, rebuilt when a source or the install changed.
BUNDLED=node_modules/.edgekv-bundled
sources=$(cat "$STAMP" examples/edge-function/*.ts examples/browser/*.ts | sha256sum | cut -d' ' -f1)
if [ "$(cat "$BUNDLED" 2>/dev/null)" != "$sources" ]; then
    ESBUILD=node_modules/.bin/esbuild
    # The Worker: one ES module, for workerd (and Cloudflare Workers).
    "$ESBUILD" examples/edge-function/worker.ts --bundle --format=esm --platform=browser \
        --conditions=workerd,worker --target=es2022 --log-level=warning \
        --outfile=examples/edge-function/dist/worker.js
    # The browser page's script (an ES module that Node can import as well).
    "$ESBUILD" examples/browser/page.ts --bundle --format=esm --platform=browser \
        --target=es2022 --log-level=warning --outfile=examples/browser/dist/page.js
    echo "$sources" > "$BUNDLED"
fi
