"""The HTTP door against the gRPC port: GET and PUT, same node, same run.

Run: .venv/bin/python -m bench.e2e.http_door [--samples 5000] [--rounds 3] [--json out.json]

Starts one `edgekv serve` with http_listen, preloads 1000 keys of 100 bytes,
then measures one sequential caller per path, the paths interleaved in
--rounds rounds so that machine noise hits them alike:

* gRPC unary (grpcio sync stub, one channel): KV.Get / KV.Put;
* Connect unary, application/proto, over one HTTP/1.1 keep-alive connection
  (stdlib http.client): POST /edgekv.v1.KV/Get and /Put;
* REST over one keep-alive connection: GET and PUT /v1/kv/{key}.

For each: client-side p50/p99, and the server's CPU per call (user + system
time of the node process from /proc/<pid>/stat, over the calls of that path
only). The node is pinned to CPU 1 and the client to CPU 0 (two CPUs or more).
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


def pin(pid: int, cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


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


def paths(grpc_endpoint: str, http_endpoint: str) -> dict[str, Callable[[int], None]]:
    channel = grpc.insecure_channel(grpc_endpoint)
    stub = kv_pb2_grpc.KVStub(channel)
    host, port = http_endpoint.rsplit(":", 1)
    connect = http.client.HTTPConnection(host, int(port))
    rest = http.client.HTTPConnection(host, int(port))
    keys = [f"bench/{i:06d}".encode() for i in range(KEYS)]
    get_bodies = [kv_pb2.GetRequest(key=k).SerializeToString() for k in keys]
    put_bodies = [kv_pb2.PutRequest(key=k, value=VALUE).SerializeToString() for k in keys]

    def post(path: str, body: bytes) -> None:
        connect.request("POST", path, body, PROTO)
        answer = connect.getresponse()
        data = answer.read()
        assert answer.status == 200, data

    def rest_call(method: str, key: bytes, body: bytes | None = None) -> None:
        rest.request(method, f"/v1/kv/{key.decode()}", body)
        answer = rest.getresponse()
        data = answer.read()
        assert answer.status == 200, data

    return {
        "grpc GET": lambda i: stub.Get(kv_pb2.GetRequest(key=keys[i % KEYS])) and None,
        "connect GET": lambda i: post("/edgekv.v1.KV/Get", get_bodies[i % KEYS]),
        "rest GET": lambda i: rest_call("GET", keys[i % KEYS]),
        "grpc PUT": lambda i: stub.Put(kv_pb2.PutRequest(key=keys[i % KEYS], value=VALUE))
        and None,
        "connect PUT": lambda i: post("/edgekv.v1.KV/Put", put_bodies[i % KEYS]),
        "rest PUT": lambda i: rest_call("PUT", keys[i % KEYS], VALUE),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000, help="calls per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-http-bench-") as tmp:
        config = write_cluster_file(tmp, http=True)
        node = start_node(config, "node-1", log_level="warning")
        try:
            pin(node.pid, 1)
            pin(0, 0)
            calls = paths(node.endpoint, node.http_endpoint)
            for i in range(KEYS):
                calls["grpc PUT"](i)
            latencies: dict[str, list[float]] = {name: [] for name in calls}
            cpu_us: dict[str, float] = dict.fromkeys(calls, 0.0)
            order = list(calls)
            for _ in range(args.rounds):
                random.shuffle(order)
                for name in order:
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
        for door in ("connect", "rest"):
            f = figures[f"{door} {verb}"]
            print(
                f"{door} {verb} / grpc {verb}: p50 x{f['p50_us'] / base['p50_us']:.2f}, "
                f"server CPU x{f['server_cpu_us'] / base['server_cpu_us']:.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
