"""The HTTP door against the gRPC port: GET and PUT, same node, same run.

Run: .venv/bin/python -m bench.e2e.http_door [--samples 5000] [--rounds 3] [--json out.json]
     [--h2c]

Starts one `edgekv serve` with http_listen, preloads 1000 keys of 100 bytes,
then measures one sequential caller per path, the paths interleaved in
--rounds rounds so that machine noise hits them alike:

* gRPC unary (grpcio sync stub, one channel): KV.Get / KV.Put;
* Connect unary, application/proto, over one HTTP/1.1 keep-alive connection
  (stdlib http.client): POST /edgekv.v1.KV/Get and /Put;
* REST over one keep-alive connection: GET and PUT /v1/kv/{key}.

With --h2c the node serves its door with hypercorn (``http.h2c: true``): the
same paths measure hypercorn's HTTP/1.1, and two more paths send the Connect
calls over one HTTP/2 connection (h2c prior knowledge, httpx with h2; its
client-side latency includes httpx's own cost, which http.client has not).

For each: client-side p50/p99, and the server's CPU per call (user + system
time of the node process from /proc/<pid>/stat, over the calls of that path
only). Nothing is pinned: grpcio runs its I/O on threads of its own, which
pinning the node's main thread to one CPU would leave free while it confines the
HTTP door (all on the event loop), and the comparison would no longer be fair.
The goals (issue 11): Connect GET p50 no slower than gRPC unary, and server CPU
per GET at most half of gRPC's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from edgekv.local.launcher import start_node, write_cluster_file
from edgekv.v1 import kv_pb2, kv_pb2_grpc

KEYS = 1000
VALUE = b"v" * 100
PROTO = {"content-type": "application/proto", "connect-protocol-version": "1"}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[int], None], n: int, pid: int) -> tuple[list[float], float]:
    """Latencies (us) of ``n`` calls and the server CPU (us) they cost in all."""
    for i in range(min(200, n)):  # warm the connection and the code paths
        call(i)
    lat = []
    before = cpu_s(pid)
    for i in range(n):
        t0 = time.perf_counter_ns()
        call(i)
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, (cpu_s(pid) - before) * 1e6


class H2Connection:
    """One HTTP/2 (h2c) connection, opened anew for each block of calls."""

    def __init__(self, base_url: str) -> None:
        import httpx  # a test dependency (httpx[http2]); only --h2c needs it

        self._new = lambda: httpx.Client(base_url=base_url, http1=False, http2=True)
        self.client = self._new()

    def reopen(self) -> None:
        self.client.close()
        self.client = self._new()


class Connection:
    """One keep-alive connection, opened anew for each block of calls (idle ones time out)."""

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        self._address = (host, int(port))
        self.conn = http.client.HTTPConnection(*self._address)

    def reopen(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(*self._address)


def paths(
    grpc_endpoint: str, http_endpoint: str, h2c: bool
) -> tuple[dict[str, Callable[[int], None]], list[Connection | H2Connection]]:
    channel = grpc.insecure_channel(grpc_endpoint)
    stub = kv_pb2_grpc.KVStub(channel)
    connect_link, rest_link = Connection(http_endpoint), Connection(http_endpoint)
    keys = [f"bench/{i:06d}".encode() for i in range(KEYS)]
    get_bodies = [kv_pb2.GetRequest(key=k).SerializeToString() for k in keys]
    put_bodies = [kv_pb2.PutRequest(key=k, value=VALUE).SerializeToString() for k in keys]

    def post(path: str, body: bytes) -> None:
        connect = connect_link.conn
        connect.request("POST", path, body, PROTO)
        answer = connect.getresponse()
        data = answer.read()
        assert answer.status == 200, data

    def rest_call(method: str, key: bytes, body: bytes | None = None) -> None:
        rest = rest_link.conn
        rest.request(method, f"/v1/kv/{key.decode()}", body)
        answer = rest.getresponse()
        data = answer.read()
        assert answer.status == 200, data

    calls: dict[str, Callable[[int], None]] = {
        "grpc GET": lambda i: stub.Get(kv_pb2.GetRequest(key=keys[i % KEYS])) and None,
        "connect GET": lambda i: post("/edgekv.v1.KV/Get", get_bodies[i % KEYS]),
        "rest GET": lambda i: rest_call("GET", keys[i % KEYS]),
        "grpc PUT": lambda i: stub.Put(kv_pb2.PutRequest(key=keys[i % KEYS], value=VALUE)) and None,
        "connect PUT": lambda i: post("/edgekv.v1.KV/Put", put_bodies[i % KEYS]),
        "rest PUT": lambda i: rest_call("PUT", keys[i % KEYS], VALUE),
    }
    links: list[Connection | H2Connection] = [connect_link, rest_link]
    if h2c:
        h2_link = H2Connection(f"http://{http_endpoint}")
        links.append(h2_link)

        def post_h2(path: str, body: bytes) -> None:
            answer = h2_link.client.post(path, content=body, headers=PROTO)
            assert answer.status_code == 200 and answer.http_version == "HTTP/2", answer

        calls["h2c GET"] = lambda i: post_h2("/edgekv.v1.KV/Get", get_bodies[i % KEYS])
        calls["h2c PUT"] = lambda i: post_h2("/edgekv.v1.KV/Put", put_bodies[i % KEYS])
    return calls, links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000, help="calls per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--h2c", action="store_true", help="serve the door with hypercorn (http.h2c: true)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-http-bench-") as tmp:
        extra = {"http": {"h2c": True}} if args.h2c else None
        config = write_cluster_file(tmp, http=True, extra=extra)
        node = start_node(config, "node-1", log_level="warning")
        try:
            calls, links = paths(node.endpoint, node.http_endpoint, args.h2c)
            for i in range(KEYS):
                calls["grpc PUT"](i)
            latencies: dict[str, list[float]] = {name: [] for name in calls}
            cpu_us: dict[str, float] = dict.fromkeys(calls, 0.0)
            order = list(calls)
            for _ in range(args.rounds):
                random.shuffle(order)
                for name in order:
                    for link in links:
                        link.reopen()
                    lat, cpu = measure(calls[name], args.samples, node.pid)
                    latencies[name] += lat
                    cpu_us[name] += cpu
        finally:
            node.stop()
    figures = {}
    print(f"{'path':<14} {'p50 us':>8} {'p99 us':>8} {'server CPU us/call':>19}")
    for name, lat in latencies.items():
        lat.sort()
        n = len(lat)
        figures[name] = {
            "p50_us": lat[n // 2],
            "p99_us": lat[min(n - 1, int(n * 0.99))],
            "server_cpu_us": cpu_us[name] / n,
        }
        f = figures[name]
        print(f"{name:<14} {f['p50_us']:8.1f} {f['p99_us']:8.1f} {f['server_cpu_us']:19.1f}")
    for verb in ("GET", "PUT"):
        base = figures[f"grpc {verb}"]
        for door in ("connect", "rest", "h2c"):
            if f"{door} {verb}" not in figures:
                continue
            f = figures[f"{door} {verb}"]
            print(
                f"{door} {verb} / grpc {verb}: p50 x{f['p50_us'] / base['p50_us']:.2f}, "
                f"server CPU x{f['server_cpu_us'] / base['server_cpu_us']:.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
