// The JS transports the integration tests drive edgekv with: real clients from
// npm, over the node's HTTP listener (http_listen).
//   connect-node  @connectrpc/connect-node createConnectTransport (HTTP/1.1 or h2c)
//   connect-web   @connectrpc/connect-web createConnectTransport (fetch)
//   grpcweb-node  @connectrpc/connect-node createGrpcWebTransport (HTTP/1.1)
//   grpcweb-web   @connectrpc/connect-web createGrpcWebTransport (fetch)
// `binary` picks application/proto (true) or application/json (false).
import * as node from "@connectrpc/connect-node";
import * as web from "@connectrpc/connect-web";

export function makeTransport({ transport, baseUrl, binary = true, token, httpVersion = "1.1" }) {
  const interceptors = [];
  if (token !== undefined && token !== null) {
    interceptors.push((next) => (req) => {
      req.header.set("Authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const common = { baseUrl, interceptors, useBinaryFormat: binary };
  switch (transport) {
    case "connect-node":
      return node.createConnectTransport({ ...common, httpVersion });
    case "connect-web":
      return web.createConnectTransport(common);
    case "grpcweb-node":
      return node.createGrpcWebTransport({ ...common, httpVersion });
    case "grpcweb-web":
      return web.createGrpcWebTransport(common);
    default:
      throw new Error(`unknown transport ${transport}`);
  }
}
