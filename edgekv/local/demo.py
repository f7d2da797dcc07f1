"""`make run`: a three-region cluster on loopback with emulated WAN delays, and a short tour.

Starts every node of deploy/local/cluster.yaml (fault proxies on every link,
realistic one-way delays between regions), then with the SDK: writes a key in
Frankfurt and times its arrival in Virginia and Tokyo through Watch; compares
a local read with the same kind of read forwarded across the emulated ocean;
writes an EU-pinned key through Virginia and proves with the residency audit
that it exists only in the EU. Then it keeps serving until Ctrl-C.

Run: python -m edgekv.local.demo [--config FILE] [--once]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.wait import wait_until

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "local" / "cluster.yaml"


def p50_ms(fn: object, n: int = 25) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def watch_arrival(
    client: Client,
    prefix: str,
    probe: bytes,
    opened: threading.Event,
    key: bytes,
    seen: dict[str, float],
    name: str,
) -> None:
    """Note when ``key`` arrives; ``opened`` is set once the watch delivered ``probe``."""
    for event in client.watch(prefix, timeout_s=30):
        if event.key == probe:
            opened.set()
        elif event.key == key:
            seen[name] = time.perf_counter()
            return


def streams_connected(clients: dict[str, Client]) -> tuple[int, int]:
    """(replication streams up, streams in all) over every node's view of its peers."""
    up = total = 0
    for c in clients.values():
        for m in c.members():
            if not m.is_self:
                total += 1
                up += m.reachable and m.replication_connected
    return up, total


def wait_for_mesh(clients: dict[str, Client], timeout_s: float = 60.0) -> float:
    """Until every node's replication stream to every peer is up and caught up.

    Returns the seconds it took. A write made before that would wait for a
    stream to connect, and its propagation would measure the cold start, not
    the link.
    """
    started = time.monotonic()

    def ready() -> bool:
        up, total = streams_connected(clients)
        return up == total and all(
            m.lag_entries == 0 for c in clients.values() for m in c.members()
        )

    wait_until(ready, timeout_s=timeout_s, what="every replication stream to connect")
    return time.monotonic() - started


def warm_up(clients: dict[str, Client]) -> None:
    """Wait for steady state, saying so: streams connected, one write each delivered."""
    up, total = streams_connected(clients)
    print(f"   warming up: {up}/{total} replication streams connected; "
          f"waiting for all before measuring ...")  # fmt: skip
    waited_s = wait_for_mesh(clients)
    for c in clients.values():  # one delivered write per stream, then measure
        c.put("demo/warmup", "x")
    waited_s += wait_for_mesh(clients)
    print(f"   steady state after {waited_s:.1f} s: {total}/{total} streams connected, no lag")


def measure_propagation(
    cluster: LocalCluster, clients: dict[str, Client], origin: str, others: list[str]
) -> None:
    regions = {n.id: n.region for n in cluster.config.nodes}
    seen: dict[str, float] = {}
    key = b"demo/greeting-%d" % time.time_ns()
    opened = {n: threading.Event() for n in others}
    probes = {n: b"demo/probe-%s-%d" % (n.encode(), time.time_ns()) for n in others}
    watchers = [
        threading.Thread(
            target=watch_arrival,
            args=(clients[n], "demo/", probes[n], opened[n], key, seen, n),
            daemon=True,
        )
        for n in others
    ]
    for w in watchers:
        w.start()

    def watches_open() -> bool:  # a local write shows up in a local watch once it is open
        for n in others:
            if not opened[n].is_set():
                clients[n].put(probes[n], "probe")
        return all(e.is_set() for e in opened.values())

    wait_until(watches_open, timeout_s=10, interval_s=0.05, what="the watch streams to open")
    start = time.perf_counter()
    written = clients[origin].put(key, "hello from the edge")
    acked = time.perf_counter()
    for w in watchers:
        w.join(10)
    print(f"   put acknowledged by {written.served_by} in {(acked - start) * 1000:.2f} ms "
          f"(durable locally; replication is asynchronous)")  # fmt: skip
    for n in others:
        delay = cluster.wan_delay_ms(regions[origin], regions[n])
        if n in seen:
            lag_ms = (seen[n] - acked) * 1000
            print(f"   visible in {n:<6} ({regions[n]:<12}) {lag_ms:7.1f} ms after the ack   "
                  f"(floor: emulated one-way delay {delay:.0f} ms)")  # fmt: skip
        else:
            print(f"   not yet visible in {n}")


def tour(cluster: LocalCluster) -> None:
    ids = cluster.node_ids
    origin, others = ids[0], ids[1:]
    regions = {n.id: n.region for n in cluster.config.nodes}
    clients = {n: Client(cluster.endpoint(n), discover=False) for n in ids}
    line = "-" * 72
    print(line)
    print(
        f"1. Asynchronous replication: a write in {origin} ({regions[origin]}) reaching the others"
    )
    warm_up(clients)
    measure_propagation(cluster, clients, origin, others)
    print(line)
    reader = others[0]
    print(f"2. Reads in {reader} ({regions[reader]}): local vs forwarded across the ocean")
    clients[origin].put("eu/user/42", "Ada, Berlin")
    local = p50_ms(lambda: clients[reader].get("demo/warmup"))
    far = p50_ms(lambda: clients[reader].get("eu/user/42"), n=10)
    entry = clients[reader].get("eu/user/42")
    owner = entry.served_by if entry else "?"
    owner_region = regions.get(owner, regions[origin])
    round_trip = 2 * cluster.wan_delay_ms(regions[reader], owner_region)
    print(f"   global key, served locally by {reader}:   p50 {local:8.3f} ms   "
          f"(floor: no WAN hop)")  # fmt: skip
    print(f"   EU-pinned key, forwarded to {owner}:    p50 {far:8.3f} ms   "
          f"(floor: emulated round trip {round_trip:.0f} ms)")  # fmt: skip
    print(line)
    print(f"3. Data residency: an EU-pinned key written through {reader}")
    result = clients[reader].put("eu/user/7", "Grace, Paris")
    print(f"   put eu/user/7 via {reader}: stored by {result.served_by}")
    for n in ids:
        audit = subprocess.run(
            [sys.executable, "-m", "edgekv.cli.main", "audit", "--config",
             str(cluster.config_path), "--node", n],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        print(f"   {audit.stdout.strip()}")
    print(line)
    for c in clients.values():
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--once", action="store_true", help="exit after the tour")
    args = parser.parse_args()
    print(f"edgekv demo: starting {args.config} with WAN emulation ...")
    with LocalCluster(args.config, wan=True, log_level="warning") as cluster:
        cluster.start()
        for spec in cluster.config.nodes:
            print(f"   {spec.id:<6} {spec.region:<13} client API {cluster.endpoint(spec.id)}"
                  f"  data {spec.data_dir}")  # fmt: skip
        tour(cluster)
        if args.once:
            return
        first = cluster.endpoint(cluster.node_ids[0])
        print("The cluster keeps serving. Try, in another terminal:")
        print(f"   .venv/bin/edgekv status --endpoint {first}")
        print(f"   .venv/bin/edgekv put hello world --endpoint {first}")
        print(f"   .venv/bin/edgekv get hello --endpoint {cluster.endpoint(cluster.node_ids[-1])}")
        print("Ctrl-C stops every node cleanly.")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print("\nstopping ...")


if __name__ == "__main__":
    main()
