# workerd config for the edge-function example: `make example` (see README).
#
#   EDGEKV_URL=http://127.0.0.1:8102 workerd serve examples/edge-function/config.capnp
#
# serves the Worker on 127.0.0.1:8787 (--socket-addr http=HOST:PORT moves it).
# The Worker is the esbuild bundle of worker.ts (dist/worker.js, built by
# scripts/npm_setup.sh). Its bindings come from the environment:
#   EDGEKV_URL    a PoP's HTTP endpoint (its http_listen), required
#   EDGEKV_TOKEN  a bearer token, when the cluster checks tokens (optional)
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge-function", worker = .edgeFunction),
    # Workers' default outbound network is the public internet only; a PoP on
    # this machine or a private network needs these address classes too.
    (name = "edgekv-network", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "edge-function"),
  ],
);

const edgeFunction :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "dist/worker.js"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "EDGEKV_URL", fromEnvironment = "EDGEKV_URL"),
    (name = "EDGEKV_TOKEN", fromEnvironment = "EDGEKV_TOKEN"),
  ],
  globalOutbound = "edgekv-network",
);
