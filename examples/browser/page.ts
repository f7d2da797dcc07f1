// A browser page that reads and writes edgekv keys with the gRPC-Web transport
// (binary, trailers in the body) over fetch(), using the client generated from
// proto/ (js/gen/). esbuild bundles it to dist/page.js, an ES module: the page
// loads it, and the tests import the same bundle under Node and call the
// exported functions against a real node.
//
// The page is served from another origin than the node, so the node must allow
// it: list the page's origin in the cluster file's CORS setting (off by default).
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { KV } from "../../js/gen/edgekv/v1/kv_pb.js";

export interface Endpoint {
  /** A PoP's HTTP endpoint (its http_listen), e.g. "http://127.0.0.1:8101". */
  baseUrl: string;
  /** A bearer token, when the cluster checks tokens. */
  token?: string;
}

export interface Entry {
  key: string;
  found: boolean;
  value: string | null;
  servedBy: string;
  expiresAtMs: string;
}

export interface Written {
  key: string;
  servedBy: string;
  version: { timestamp: string; origin: string } | null;
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

export function kvClient(endpoint: Endpoint): Client<typeof KV> {
  const interceptors: Interceptor[] = [];
  if (endpoint.token) {
    const header = `Bearer ${endpoint.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("Authorization", header);
      return next(req);
    });
  }
  return createClient(KV, createGrpcWebTransport({ baseUrl: endpoint.baseUrl, interceptors }));
}

export async function readKey(endpoint: Endpoint, key: string): Promise<Entry> {
  const r = await kvClient(endpoint).get({ key: utf8.encode(key) });
  return {
    key,
    found: r.found,
    value: r.found ? text.decode(r.value) : null,
    servedBy: r.servedBy,
    expiresAtMs: r.expiresAtMs.toString(),
  };
}

export async function writeKey(
  endpoint: Endpoint,
  key: string,
  value: string,
  ttlMs = 0,
): Promise<Written> {
  const r = await kvClient(endpoint).put({
    key: utf8.encode(key),
    value: utf8.encode(value),
    ttlMs: BigInt(ttlMs),
  });
  const v = r.version;
  return { key, servedBy: r.servedBy, version: v ? { timestamp: v.timestamp.toString(), origin: v.origin } : null };
}

export async function deleteKey(endpoint: Endpoint, key: string): Promise<Written> {
  const r = await kvClient(endpoint).delete({ key: utf8.encode(key) });
  const v = r.version;
  return { key, servedBy: r.servedBy, version: v ? { timestamp: v.timestamp.toString(), origin: v.origin } : null };
}

/** The error as the page shows it: the Connect code and the node's message. */
export function describeError(err: unknown): { code: string; message: string } {
  const e = ConnectError.from(err);
  return { code: Code[e.code], message: e.rawMessage };
}

function wirePage(doc: Document): void {
  const field = (id: string) => doc.getElementById(id) as HTMLInputElement;
  const out = doc.getElementById("out") as HTMLPreElement;
  const endpoint = (): Endpoint => ({ baseUrl: field("endpoint").value, token: field("token").value || undefined });
  const params = new URLSearchParams(doc.location.search);
  field("endpoint").value = params.get("endpoint") ?? field("endpoint").value;
  const run = (action: () => Promise<unknown>) => async () => {
    out.textContent = "…";
    try {
      out.textContent = JSON.stringify(await action(), null, 2);
      out.className = "ok";
    } catch (err) {
      out.textContent = JSON.stringify(describeError(err), null, 2);
      out.className = "error";
    }
  };
  doc.getElementById("read")!.addEventListener("click", run(() => readKey(endpoint(), field("key").value)));
  doc.getElementById("write")!.addEventListener(
    "click",
    run(() => writeKey(endpoint(), field("key").value, field("value").value, Number(field("ttl").value || 0))),
  );
  doc.getElementById("delete")!.addEventListener("click", run(() => deleteKey(endpoint(), field("key").value)));
}

if (typeof document !== "undefined" && document.getElementById("out")) {
  wirePage(document);
}
