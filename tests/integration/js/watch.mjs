// A Watch stream from Node, driven line by line by a pytest integration test.
//
//   node watch.mjs '{"transport": ..., "binary": ..., "baseUrl": ..., "token": ...,
//                    "httpVersion": "1.1" or "2" (h2c; the -node transports only),
//                    "prefix": "<base64>"}'
//
// Prints one JSON line per event ({"event": <WatchEvent in the JSON mapping>}).
// A line "cancel" on stdin aborts the call (the client's AbortSignal); the
// stream's end is printed as {"ended": "<Connect code name>" or "ok", "message": ...}
// and the script exits 0.
import { fromJson, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createInterface } from "node:readline";
import { KV, WatchEventSchema, WatchRequestSchema } from "../../../js/gen/edgekv/v1/kv_pb.js";
import { makeTransport } from "./transports.mjs";

const spec = JSON.parse(process.argv[2]);
const kv = createClient(KV, makeTransport(spec));
const abort = new AbortController();
const print = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim() === "cancel") abort.abort();
});

try {
  const request = fromJson(WatchRequestSchema, { prefix: spec.prefix ?? "" });
  for await (const event of kv.watch(request, { signal: abort.signal })) {
    print({ event: toJson(WatchEventSchema, event, { alwaysEmitImplicit: true }) });
  }
  print({ ended: "ok", message: "" });
} catch (err) {
  const e = ConnectError.from(err);
  print({ ended: Code[e.code], message: e.rawMessage });
}
lines.close();
