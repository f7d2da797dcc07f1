// The browser example's bundle (examples/browser/dist/page.js, built by esbuild
// for browsers) imported under Node and run against a real node: the same
// gRPC-Web client code a browser runs, minus the DOM.
//
//   node browser_page.mjs '{"baseUrl": ..., "token": ..., "key": "k", "value": "v", "ttlMs": 0}'
//
// Writes the key, reads it back, deletes it, reads again; prints the four results
// (or {"error": {"code", "message"}} for the first call that failed) as JSON.
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const bundle = resolve(import.meta.dirname, "../../../examples/browser/dist/page.js");
const page = await import(pathToFileURL(bundle).href);
const spec = JSON.parse(process.argv[2]);
const endpoint = { baseUrl: spec.baseUrl, token: spec.token ?? undefined };
try {
  const wrote = await page.writeKey(endpoint, spec.key, spec.value, spec.ttlMs ?? 0);
  const read = await page.readKey(endpoint, spec.key);
  const deleted = await page.deleteKey(endpoint, spec.key);
  const after = await page.readKey(endpoint, spec.key);
  process.stdout.write(JSON.stringify({ wrote, read, deleted, after }));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: page.describeError(err) }));
}
