"""STRONG reads and compare-and-set at a home PoP, against the round trip to the home.

Run: .venv/bin/python -m bench.e2e.home [--config deploy/local/cluster.yaml] [--ops 100]

Starts the cluster file's nodes on loopback with the emulated WAN delays (fault
proxies on every inter-node link), adds a placement rule ``home-bench/``
allowed everywhere and homed at the first eu-west node, and prints, from a
client next to each PoP:

* LOCAL read p50/p99 (the baseline: the PoP's own store);
* STRONG read p50/p99 (forwarded to the home, which reads its own store);
* CAS p50/p99 (``put(if_version=...)``, one client, so every CAS succeeds);
* the emulated round trip to the home and a bare gRPC echo through the same
  emulated link (the emulation's own floor), and p50 minus the RTT
  (goal: STRONG and CAS p50 <= RTT + 3 ms);
* sequential throughput (ops/s) and the client's CPU per op.

The machine is shared: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import yaml

from bench.e2e.wan import DEFAULT_CONFIG, echo_through_delay, pct
from edgekv import Client, Version
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import free_ports
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

PREFIX = "home-bench/"


def measure(fn: Callable[[], object], n: int) -> tuple[list[float], float, float]:
    """Latencies (ms) of ``n`` sequential calls, ops/s, and client CPU µs per op."""
    out = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return out, n / wall, cpu / n * 1e6


class Cas:
    """Increments one key by compare-and-set on the version its last write returned."""

    def __init__(self, client: Client, key: str, version: Version) -> None:
        self._client, self._key, self._version, self._n = client, key, version, 0

    def __call__(self) -> None:
        self._n += 1
        put = self._client.put(self._key, b"%d" % self._n, if_version=self._version)
        self._version = put.version


def line(name: str, s: list[float], ops_s: float, cpu_us: float, rtt: float | None) -> str:
    p50, p99 = pct(s, 0.5), pct(s, 0.99)
    extra = "" if rtt is None else f"  p50 - RTT {p50 - rtt:+6.1f} ms"
    return (
        f"    {name:<7} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {ops_s:7.0f} ops/s  "
        f"client CPU {cpu_us:5.0f} µs/op{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--ops", type=int, default=100, help="calls per measurement")
    args = parser.parse_args()
    doc = yaml.safe_load(args.config.read_text())
    home = next(n["id"] for n in doc["nodes"] if n["region"] == "eu-west")
    regions = [r["name"] for r in doc["regions"]]
    doc.setdefault("placement", []).append({"prefix": PREFIX, "regions": regions, "home": home})
    with tempfile.TemporaryDirectory(prefix="edgekv-home-") as tmp:
        ports = iter(free_ports(2 * len(doc["nodes"])))
        for node in doc["nodes"]:  # same topology, free ports, throwaway data
            node["listen"] = f"127.0.0.1:{next(ports)}"
            node["peer_listen"] = f"127.0.0.1:{next(ports)}"
            node.pop("http_listen", None)
            node["data_dir"] = f"data/{node['id']}"
        config = Path(tmp) / "cluster.yaml"
        config.write_text(yaml.safe_dump(doc))
        with LocalCluster(config, wan=True, log_level="warning") as cluster:
            cluster.start()
            nodes = cluster.config.nodes
            region = {n.id: n.region for n in nodes}
            load = os.getloadavg()[0]
            print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} (shared: compare "
                  f"columns within this run); {len(nodes)} nodes on loopback, WAN emulated by "
                  f"fault proxies; home of {PREFIX!r}: {home}")  # fmt: skip
            time.sleep(3)  # heartbeats measure RTTs, streams connect over the WAN
            for n in nodes:
                rtt = None if n.id == home else 2 * cluster.wan_delay_ms(n.region, region[home])
                key = f"{PREFIX}{n.id}"
                with (
                    Client(cluster.endpoint(n.id), discover=False) as client,
                    grpc.insecure_channel(cluster.endpoint(n.id)) as channel,
                ):
                    stub = kv_pb2_grpc.KVStub(channel)
                    strong = kv_pb2.GetRequest(
                        key=key.encode(), consistency=common_pb2.CONSISTENCY_STRONG
                    )
                    version = client.put(key, b"0").version
                    stub.Get(strong, timeout=10)  # channels warm
                    time.sleep(0.5)  # the value reaches this PoP: LOCAL finds it
                    where = (
                        "the home itself" if rtt is None else f"emulated RTT to home {rtt:.0f} ms"
                    )
                    print(f"\n  via {n.id} ({n.region}; {where})")
                    if rtt is not None:
                        floor = echo_through_delay(  # its own directory: a fresh ready file
                            tempfile.mkdtemp(dir=tmp),
                            cluster.wan_delay_ms(n.region, region[home]),
                            args.ops // 5,
                        )
                        print(f"    floor   bare gRPC echo through the same emulated link: "
                              f"p50 {pct(floor, 0.5):.1f} ms")  # fmt: skip
                    s, ops_s, cpu = measure(functools.partial(client.get, key), args.ops)
                    print(line("LOCAL", s, ops_s, cpu, None))
                    s, ops_s, cpu = measure(
                        functools.partial(stub.Get, strong, timeout=10), args.ops
                    )
                    print(line("STRONG", s, ops_s, cpu, rtt))
                    s, ops_s, cpu = measure(Cas(client, key, version), args.ops)
                    print(line("CAS", s, ops_s, cpu, rtt))


if __name__ == "__main__":
    main()
