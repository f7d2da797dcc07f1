"""Geo-routing on an emulated planet: local vs forwarded reads, lag per region pair.

Run: .venv/bin/python -m bench.e2e.wan [--config deploy/local/cluster.yaml] [--writes 200]

Starts the cluster file's nodes on loopback with fault proxies carrying the
emulated one-way delays on every inter-node link (peer and forwarding traffic),
then prints:
* local read p50/p99 at each PoP (a global key, client next to the PoP);
* forwarded read p50/p99 of an EU-pinned key from each non-EU PoP, next to the
  emulated round trip (goal: p50 <= round trip + 2 ms);
* replication lag for each ordered region pair (ack at the origin -> Watch event
  at the destination), next to the one-way delay (goal: p99 <= one-way + 25 ms).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import yaml

from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import free_ports

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "local" / "cluster.yaml"


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def echo_through_delay(tmp: str, one_way_ms: float, n: int) -> list[float]:
    """Round trips of a bare gRPC echo through a fault proxy with ``one_way_ms``.

    The emulation's own cost (the proxy releases bytes on the event loop's ~1 ms
    timer) is in this floor too, so forwarded reads can be compared with it.
    """
    import json
    import subprocess
    import sys

    import grpc

    from edgekv.local.faultproxy import ProxyHost
    from edgekv.local.wait import wait_until

    ready = Path(tmp) / "echo.ready.json"
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e.echo_server", "--ready-file", str(ready)],
        cwd=Path(__file__).resolve().parents[2],
    )
    host = ProxyHost()
    try:
        wait_until(ready.exists, timeout_s=20, what="the echo server")
        proxy = host.add(json.loads(ready.read_text())["endpoint"])
        host.set_delay(proxy, one_way_ms)
        with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            call = channel.unary_unary("/edgekv.bench.Echo/Echo")
            call(b"warm-up", timeout=10)
            return timed(lambda: call(b"\x0a\x08eu/bench", timeout=10), max(20, n))
    finally:
        host.close()
        echo.terminate()
        echo.wait(10)


def lag_between(cluster: LocalCluster, src: str, dst: str, writes: int) -> list[float]:
    seen: dict[bytes, float] = {}
    acked: dict[bytes, float] = {}
    prefix = f"lag/{src}/{dst}/".encode()
    with (
        Client(cluster.endpoint(src), discover=False) as writer,
        Client(cluster.endpoint(dst), discover=False) as watcher,
    ):
        stream = watcher.watch(prefix, timeout_s=120)
        done = threading.Event()

        def consume() -> None:
            for event in stream:
                seen[event.key] = time.perf_counter()
                if len(seen) >= writes:
                    break
            done.set()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(0.5)
        for i in range(writes):
            key = prefix + b"%06d" % i
            writer.put(key, b"v" * 100)
            acked[key] = time.perf_counter()
            time.sleep(0.005)  # ~200 writes/s per pair: latency, not throughput
        done.wait(30)
    return [(seen[k] - acked[k]) * 1000.0 for k in acked if k in seen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    doc = yaml.safe_load(args.config.read_text())
    with tempfile.TemporaryDirectory(prefix="edgekv-wan-") as tmp:
        ports = iter(free_ports(2 * len(doc["nodes"])))
        for node in doc["nodes"]:  # same topology, free ports, throwaway data
            node["listen"] = f"127.0.0.1:{next(ports)}"
            node["peer_listen"] = f"127.0.0.1:{next(ports)}"
            node["data_dir"] = f"data/{node['id']}"
        config = Path(tmp) / "cluster.yaml"
        config.write_text(yaml.safe_dump(doc))
        with LocalCluster(config, wan=True, log_level="warning") as cluster:
            cluster.start()
            nodes = cluster.config.nodes
            region = {n.id: n.region for n in nodes}
            print(f"machine: {os.cpu_count()} CPUs; {len(nodes)} nodes on loopback, WAN emulated "
                  f"by fault proxies")  # fmt: skip
            clients = {n.id: Client(cluster.endpoint(n.id), discover=False) for n in nodes}
            time.sleep(3)  # heartbeats measure RTTs, streams connect over the WAN
            pinned_home = next(n.id for n in nodes if n.region == "eu-west")
            clients[pinned_home].put("eu/bench", "x")
            for n in nodes:
                clients[n.id].put(f"g/{n.id}", "x")
            print("\nlocal reads (global key, client next to the PoP)")
            for n in nodes:
                s = timed(lambda n=n: clients[n.id].get(f"g/{n.id}"), args.reads)
                p50, p99 = pct(s, 0.5), pct(s, 0.99)
                print(f"  {n.id:<7} ({n.region:<13}) p50 {p50:7.3f} ms  p99 {p99:7.3f} ms")
            floor = echo_through_delay(
                tmp, cluster.wan_delay_ms("us-east", region[pinned_home]), args.reads // 10
            )
            print(f"\nforwarded reads (eu/ key, held only by {pinned_home})")
            print(f"  floor: bare gRPC echo through the same emulated link (us-east): "
                  f"p50 {pct(floor, 0.5):.1f} ms")  # fmt: skip
            for n in nodes:
                if n.id == pinned_home:
                    continue
                rtt = 2 * cluster.wan_delay_ms(n.region, region[pinned_home])
                s = timed(lambda n=n: clients[n.id].get("eu/bench"), max(20, args.reads // 10))
                p50, p99 = pct(s, 0.5), pct(s, 0.99)
                print(f"  via {n.id:<7} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                      f"(emulated RTT {rtt:.0f} ms; p50 - RTT = {p50 - rtt:+.1f} ms)")  # fmt: skip
            print("\nreplication lag per region pair (ack at origin -> Watch at destination)")
            for src in nodes:
                for dst in nodes:
                    if src.id == dst.id:
                        continue
                    one_way = cluster.wan_delay_ms(src.region, dst.region)
                    lag = lag_between(cluster, src.id, dst.id, args.writes)
                    print(f"  {src.region:>12} -> {dst.region:<12} one-way {one_way:5.0f} ms  "
                          f"lag p50 {pct(lag, 0.5):6.1f}  p99 {pct(lag, 0.99):6.1f} ms  "
                          f"(p99 - one-way = {pct(lag, 0.99) - one_way:+.1f} ms)")  # fmt: skip
            for c in clients.values():
                c.close()


if __name__ == "__main__":
    main()
