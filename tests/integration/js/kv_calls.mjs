// Unary calls to edgekv.v1.KV and edgekv.v1.Cluster from Node, for the pytest
// integration tests (tests/integration/test_js_clients.py).
//
//   node kv_calls.mjs < spec.json
// with the spec on stdin (values up to the 1 MiB limit are too big for argv):
//   {"transport": "connect-node", "binary": true, "baseUrl": "http://127.0.0.1:PORT",
//    "httpVersion": "1.1" (or "2": h2c; the -node transports only),
//    "token": "...", "calls": [{"service": "KV", "method": "put",
//                               "request": {"key": "<base64>", ...}}]}
//
// Requests are given in the protobuf JSON mapping (bytes as base64). Prints one
// JSON array, a result per call, in order: {"ok": <response in the JSON
// mapping, defaults included>, "header": {...}} or {"error": {"code":
// "InvalidArgument", "message": "..."}, "header": {...}}. A failed call does not
// stop the next.
import { fromJson, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Cluster } from "../../../js/gen/edgekv/v1/cluster_pb.js";
import { KV } from "../../../js/gen/edgekv/v1/kv_pb.js";
import { text } from "node:stream/consumers";
import { makeTransport } from "./transports.mjs";

const spec = JSON.parse(await text(process.stdin));
const transport = makeTransport(spec);
const services = { KV, Cluster };
const clients = { KV: createClient(KV, transport), Cluster: createClient(Cluster, transport) };

const results = [];
for (const call of spec.calls) {
  const service = services[call.service ?? "KV"];
  const method = service.method[call.method];
  if (method === undefined) throw new Error(`no method ${call.method} on ${service.typeName}`);
  const header = {};
  const options = {
    timeoutMs: call.timeoutMs ?? 10_000,
    onHeader: (h) => h.forEach((v, k) => (header[k] = v)),
  };
  try {
    const request = fromJson(method.input, call.request ?? {});
    const response = await clients[call.service ?? "KV"][call.method](request, options);
    results.push({ ok: toJson(method.output, response, { alwaysEmitImplicit: true }), header });
  } catch (err) {
    const e = ConnectError.from(err);
    results.push({ error: { code: Code[e.code], message: e.rawMessage }, header });
  }
}
process.stdout.write(JSON.stringify(results));
