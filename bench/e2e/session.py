"""SESSION reads: their cost at a caught-up PoP, and their latency right after a remote write.

Run: .venv/bin/python -m bench.e2e.session [--reads 2000] [--writes 200]

Starts three nodes (eu-west, us-east, ap-northeast) on loopback with the
emulated one-way delays of deploy/local/cluster.yaml on every link (fault
proxies), then prints, in one run:

* a caught-up PoP: LOCAL vs SESSION get of one key, interleaved, with a token
  that the PoP has applied (goal: SESSION p50 within 10% of LOCAL);
* right after a remote write: put at eu-west, then at once a SESSION get at
  us-east (and ap-northeast) carrying the write's token; the read waits for
  replication (goal: p50 <= one-way delay + 5 ms); how often LOCAL misses;
* the CPU the LOCAL read path adds for the level check (in process).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import timeit
from pathlib import Path

from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
DELAYS = {"eu-west": {"us-east": 45, "ap-northeast": 110}, "us-east": {"ap-northeast": 75}}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def caught_up(reader: Client, writer: Client, reads: int) -> tuple[list[float], list[float]]:
    wrote = writer.put("bench/caught-up", b"v" * 100)
    reader.observe_token(wrote.session_token)
    here = reader_id(reader)
    while True:  # until the PoP has applied it (then it never forwards)
        entry = reader.get("bench/caught-up", consistency="session")
        if entry is not None and entry.served_by == here:
            break
        time.sleep(0.1)
    local: list[float] = []
    session: list[float] = []
    for _ in range(reads):  # interleaved: both see the same machine load
        t0 = time.perf_counter()
        reader.get("bench/caught-up")
        t1 = time.perf_counter()
        reader.get("bench/caught-up", consistency="session")
        t2 = time.perf_counter()
        local.append((t1 - t0) * 1000.0)
        session.append((t2 - t1) * 1000.0)
    return local, session


def reader_id(client: Client) -> str:
    return client.status().node_id


def after_remote_write(
    writer: Client, reader: Client, writes: int
) -> tuple[list[float], int, int, int]:
    """(SESSION read latencies, SESSION misses, LOCAL misses, reads forwarded)."""
    latencies: list[float] = []
    misses = local_misses = forwarded = 0
    here = reader_id(reader)
    for i in range(writes):
        key = f"bench/after/{here}/{i}"
        wrote = writer.put(key, b"v" * 100)
        reader.observe_token(wrote.session_token)
        t0 = time.perf_counter()
        entry = reader.get(key, consistency="session")
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if entry is None or entry.version < wrote.version:
            misses += 1
        elif entry.served_by != here:
            forwarded += 1
        writer.put(key + "/l", b"v")
        if reader.get(key + "/l") is None:
            local_misses += 1
        time.sleep(0.01)
    return latencies, misses, local_misses, forwarded


def level_check_ns() -> float:
    """Nanoseconds the LOCAL path spends on the two level checks (request, then call)."""
    from edgekv.coordinator import Call
    from edgekv.principal import ANYONE
    from edgekv.v1 import kv_pb2

    request = kv_pb2.GetRequest(key=b"k")
    call = Call(ANYONE)

    def check() -> bool:
        return bool(
            (request.consistency or request.session_token)
            or (call.consistency or call.session_token)
        )

    n = 200_000
    return min(timeit.repeat(check, number=n, repeat=5)) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-session-") as tmp:
        path = write_cluster_file(
            Path(tmp),
            regions=REGIONS,
            nodes=NODES,
            extra={"wan": {"delays_ms": DELAYS}, "security": {"auth": {"mode": "disabled"}}},
        )
        with LocalCluster(path, wan=True, log_level="warning") as cluster:
            cluster.start()
            load = os.getloadavg()[0]
            print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; 3 nodes on "
                  "loopback, WAN emulated by fault proxies (one-way delays below)")  # fmt: skip
            clients = {n: Client(cluster.endpoint(n), discover=False) for n, _ in NODES}
            time.sleep(3)  # heartbeats, replication streams up over the WAN
            writer = clients["fra-1"]
            local, session = caught_up(clients["iad-1"], writer, args.reads)
            lp50, sp50 = pct(local, 0.5), pct(session, 0.5)
            print(f"\ncaught-up PoP (iad-1), {args.reads} interleaved gets of one key")
            print(f"  LOCAL    p50 {lp50:7.3f} ms  p99 {pct(local, 0.99):7.3f} ms")
            print(f"  SESSION  p50 {sp50:7.3f} ms  p99 {pct(session, 0.99):7.3f} ms  "
                  f"(ratio p50 {sp50 / lp50:.3f}, p99 "
                  f"{pct(session, 0.99) / pct(local, 0.99):.3f}; goal <= 1.10)")  # fmt: skip
            print("\nSESSION get right after a put at fra-1 (eu-west), token handed over")
            for node, region in NODES[1:]:
                one_way = cluster.wan_delay_ms("eu-west", region)
                lat, misses, local_misses, forwarded = after_remote_write(
                    writer, clients[node], args.writes
                )
                p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
                print(f"  at {node} ({region}): one-way {one_way:.0f} ms  p50 {p50:6.1f} ms  "
                      f"p99 {p99:6.1f} ms  (p50 - one-way = {p50 - one_way:+.1f} ms; goal <= +5)"
                      f"  saw the write {args.writes - misses}/{args.writes}, forwarded "
                      f"{forwarded}; LOCAL missed {local_misses}/{args.writes}")  # fmt: skip
            check_ns = level_check_ns()
            print(f"\nLOCAL path: the level checks cost {check_ns:.0f} ns per get "
                  f"({check_ns / (lp50 * 1e6) * 100:.3f}% of a LOCAL get's p50)")  # fmt: skip
            for c in clients.values():
                c.close()


if __name__ == "__main__":
    main()
