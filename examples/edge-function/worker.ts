// An edge function that reads and writes edgekv over fetch(): a Cloudflare
// Worker module (`export default { fetch }`), run here by workerd.
//
// It uses the client generated from proto/ (protoc-gen-es, js/gen/) with the
// Connect protocol's fetch transport, in binary (application/proto):
//   GET /?pinned=eu/profile/alice&global=config/greeting&write=sessions/x&ttl_ms=60000
// reads the pinned key (held only in its region: a PoP elsewhere forwards the
// read, and served_by says who answered) and the global key in parallel, writes
// the `write` key with a TTL, and answers all three as JSON, with a
// Server-Timing header saying where the time went.
//
// Bindings (examples/edge-function/config.capnp): EDGEKV_URL, a PoP's HTTP
// endpoint (its http_listen); EDGEKV_TOKEN, a bearer token, when the cluster
// checks tokens.
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { KV } from "../../js/gen/edgekv/v1/kv_pb.js";
import type { Version } from "../../js/gen/edgekv/v1/common_pb.js";

export interface Env {
  EDGEKV_URL: string;
  EDGEKV_TOKEN?: string | null;
}

// One client per isolate and endpoint: the transport is stateless, but building
// it per request would waste the isolate's warm start.
let cached: { key: string; kv: Client<typeof KV> } | undefined;

function kvClient(env: Env): Client<typeof KV> {
  const key = `${env.EDGEKV_URL}\n${env.EDGEKV_TOKEN ?? ""}`;
  if (cached?.key !== key) {
    const interceptors: Interceptor[] = [];
    const token = env.EDGEKV_TOKEN;
    if (token) {
      interceptors.push((next) => (req) => {
        req.header.set("Authorization", `Bearer ${token}`);
        return next(req);
      });
    }
    const transport = createConnectTransport({
      baseUrl: env.EDGEKV_URL,
      useBinaryFormat: true,
      interceptors,
      // connect-web asks fetch for redirect: "error", which Workers refuse
      // ("use manual and check the status"); edgekv never redirects.
      fetch: (input, init) => fetch(input, { ...init, redirect: "manual" }),
    });
    cached = { key, kv: createClient(KV, transport) };
  }
  return cached.kv;
}

interface Timing {
  name: string;
  durMs: number;
  desc: string;
}

// Time one call; the Worker's clock advances across I/O, which is what we measure.
// The node says where its own time went in its Server-Timing header (e.g.
// "forward;dur=88.1, total;dur=88.9"): kept, under this call's name, so the
// answer shows the edge-to-PoP hop apart from the PoP's work and its forwarding.
async function timed<T>(
  timings: Timing[],
  name: string,
  call: (options: CallOptions) => Promise<T>,
  describe: (result: T) => string,
): Promise<T> {
  let node: string | null = null;
  const start = performance.now();
  const result = await call({ onHeader: (h) => (node = h.get("server-timing")) });
  timings.push({ name, durMs: performance.now() - start, desc: describe(result) });
  for (const entry of (node ?? "").split(",")) {
    const [metric, ...params] = entry.trim().split(";");
    const dur = params.find((p) => p.trim().startsWith("dur="));
    if (metric && dur) {
      timings.push({ name: `${name}.${metric}`, durMs: Number(dur.trim().slice(4)), desc: "" });
    }
  }
  return result;
}

function serverTiming(timings: Timing[]): string {
  return timings
    .map((t) => {
      const desc = t.desc ? `;desc="${t.desc.replace(/["\\]/g, "")}"` : "";
      return `${t.name};dur=${t.durMs.toFixed(1)}${desc}`;
    })
    .join(", ");
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

function version(v: Version | undefined): { timestamp: string; origin: string } | null {
  // uint64 is a bigint in protobuf-es; JSON has no bigint.
  return v ? { timestamp: v.timestamp.toString(), origin: v.origin } : null;
}

function json(body: unknown, status: number, timings: Timing[]): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json", "server-timing": serverTiming(timings) },
  });
}

// Code.InvalidArgument -> "invalid_argument", as the Connect protocol spells it.
function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const timings: Timing[] = [];
    if (!env.EDGEKV_URL) {
      return json({ error: { code: "misconfigured", message: "EDGEKV_URL is not set" } }, 500, timings);
    }
    const params = new URL(request.url).searchParams;
    const pinnedKey = params.get("pinned") ?? "eu/profile/alice";
    const globalKey = params.get("global") ?? "config/greeting";
    const writeKey = params.get("write") ?? `sessions/${crypto.randomUUID()}`;
    const ttlMs = BigInt(params.get("ttl_ms") ?? "60000");
    const kv = kvClient(env);
    const started = performance.now();
    try {
      const read = (name: string, key: string) =>
        timed(timings, name, (o) => kv.get({ key: utf8.encode(key) }, o), (r) => `served by ${r.servedBy}`)
          .then((r) => ({
            key,
            found: r.found,
            value: r.found ? text.decode(r.value) : null,
            served_by: r.servedBy,
            version: version(r.version),
            expires_at_ms: r.expiresAtMs.toString(),
          }));
      const [pinned, global] = await Promise.all([
        read("edgekv-get-pinned", pinnedKey),
        read("edgekv-get-global", globalKey),
      ]);
      const value = JSON.stringify({ seen_at: new Date().toISOString(), pinned_found: pinned.found });
      const put = await timed(
        timings,
        "edgekv-put",
        (o) => kv.put({ key: utf8.encode(writeKey), value: utf8.encode(value), ttlMs }, o),
        (r) => `accepted by ${r.servedBy}`,
      );
      timings.push({ name: "total", durMs: performance.now() - started, desc: "edge function" });
      return json(
        {
          pinned,
          global,
          wrote: {
            key: writeKey,
            value,
            ttl_ms: ttlMs.toString(),
            served_by: put.servedBy,
            version: version(put.version),
          },
        },
        200,
        timings,
      );
    } catch (err) {
      const e = ConnectError.from(err);
      timings.push({ name: "total", durMs: performance.now() - started, desc: "failed" });
      // The node's error, by its Connect code (e.g. invalid_argument, unauthenticated).
      const status = e.code === Code.Unauthenticated ? 401 : e.code === Code.PermissionDenied ? 403 : 502;
      return json({ error: { code: codeName(e.code), message: e.rawMessage } }, status, timings);
    }
  },
};
