"""Replication benchmarks on loopback: lag under load, writes with a peer down, repair time.

Run: .venv/bin/python -m bench.e2e.replication [--rate 2000] [--seconds 10] [--repair-keys 1000000]

1. Lag: a client writes at --rate puts/s to node A and watches B. Lag is the
   time from A's acknowledgement to the change arriving on B's Watch stream
   (one process, one clock). Prints p50/p99/max.
2. Local write latency at A with every peer up, then with B killed (goal: within 10%).
3. Anti-entropy: two nodes are pre-loaded offline with --repair-keys identical keys,
   10% of which are then changed on one of them only; the cluster starts and the time
   until both nodes' digests match is the repair time.
All processes share this machine's 2 cores; figures are ratios in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.v1 import kv_pb2, kv_pb2_grpc, replication_pb2, replication_pb2_grpc

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, samples_ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(samples_ms):>6}  p50={pct(samples_ms, 0.5):7.3f} ms  "
        f"p99={pct(samples_ms, 0.99):7.3f} ms  max={max(samples_ms):7.3f} ms"
    )


async def measure_lag(a: str, b: str, rate: int, seconds: float) -> list[float]:
    """Write at ``rate``/s to a, watch b; return per-write lag in ms."""
    acked: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    async with grpc.aio.insecure_channel(a) as ca, grpc.aio.insecure_channel(b) as cb:
        writer, watcher = kv_pb2_grpc.KVStub(ca), kv_pb2_grpc.KVStub(cb)
        watch = watcher.Watch(kv_pb2.WatchRequest(prefix=b"lag/"))
        total = int(rate * seconds)

        async def consume() -> None:
            async for event in watch:
                seen[event.key] = time.perf_counter()
                if len(seen) >= total:
                    return

        consumer = asyncio.create_task(consume())
        await writer.Put(kv_pb2.PutRequest(key=b"warmup", value=b"x"))
        await asyncio.sleep(0.5)  # the watch is registered

        inflight = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            key = b"lag/%08d" % i
            try:
                await writer.Put(kv_pb2.PutRequest(key=key, value=b"v" * 100))
                acked[key] = time.perf_counter()
            finally:
                inflight.release()

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await inflight.acquire()
            tasks.append(asyncio.create_task(put(i)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
        try:
            await asyncio.wait_for(consumer, 30)
        except TimeoutError:
            print(f"  watch saw {len(seen)} of {total} writes within 30 s")
        watch.cancel()
    print(f"  offered {rate}/s, achieved {achieved:.0f} writes/s")
    return [(seen[k] - acked[k]) * 1000.0 for k in acked if k in seen]


def put_latencies(endpoint: str, n: int) -> list[float]:
    with grpc.insecure_channel(endpoint) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        value = b"v" * 100
        for i in range(200):
            kv.Put(kv_pb2.PutRequest(key=b"warm/%d" % i, value=value))
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            kv.Put(kv_pb2.PutRequest(key=b"local/%08d" % i, value=value))
            out.append((time.perf_counter() - t0) * 1000.0)
        return out


def preload_divergent(config: Path, keys: int) -> None:
    """Fill two nodes' data dirs offline: identical data, then 10% changed on one."""
    from edgekv.cluster.placement import PlacementRules
    from edgekv.config.loader import load_config
    from edgekv.storage.engine import Engine, EngineSettings, PutOp

    cfg = load_config(config)
    rules = PlacementRules.from_config(cfg)
    opts = EngineSettings(
        placement_of=rules.placement_of, placement_fingerprint=rules.fingerprint()
    )
    a = Engine(cfg.node("fra-1").data_dir, "fra-1", opts)
    b = Engine(cfg.node("iad-1").data_dir, "iad-1", opts)
    value = os.urandom(100)
    for start in range(0, keys, 1000):
        a.write([PutOp(b"ae/%08d" % i, value) for i in range(start, min(keys, start + 1000))])
        entries = a.read_log(a.first_log_seq(), 1000)
        b.apply_many((e.key, e.record) for e in entries)
        a.trim_log(a.last_seq + 1)  # shipping is not what is measured here
    changed = os.urandom(100)
    for start in range(0, keys, 10_000):  # every 10th key differs
        a.write(
            [PutOp(b"ae/%08d" % i, changed) for i in range(start, min(keys, start + 10_000), 10)]
        )
    a.trim_log(a.last_seq + 1)
    a.close()
    b.close()


async def digests_equal(peer_a: str, peer_b: str) -> bool:
    async with grpc.aio.insecure_channel(peer_a) as ca, grpc.aio.insecure_channel(peer_b) as cb:
        req_a = replication_pb2.DigestRequest(
            hello=replication_pb2.PeerHello(node_id="iad-1", cluster="bench")
        )
        req_b = replication_pb2.DigestRequest(
            hello=replication_pb2.PeerHello(node_id="fra-1", cluster="bench")
        )
        da = await replication_pb2_grpc.ReplicationStub(ca).GetDigests(req_a)
        db = await replication_pb2_grpc.ReplicationStub(cb).GetDigests(req_b)
        return list(da.segment_digests) == list(db.segment_digests)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repair-keys", type=int, default=1_000_000)
    parser.add_argument("--skip-repair", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; all nodes and the client on loopback")
    with tempfile.TemporaryDirectory(prefix="edgekv-bench-") as tmp:
        # Two nodes: on 2 CPUs a third would only add contention to the figures.
        path = write_cluster_file(
            tmp, regions=REGIONS[:2], nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
            cluster="bench", extra={"replication": {"heartbeat_interval_s": 0.5}},
        )  # fmt: skip
        with LocalCluster(path, proxies=False, log_level="warning") as cluster:
            cluster.start()
            a, b = cluster.endpoint("fra-1"), cluster.endpoint("iad-1")
            lag = asyncio.run(measure_lag(a, b, args.rate, args.seconds))
            print(summary(f"replication lag A->B @{args.rate}/s", lag))
            up = put_latencies(a, 3000)
            print(summary("local put, all peers up", up))
            cluster.kill("iad-1")
            down = put_latencies(a, 3000)
            print(summary("local put, one peer down", down))
            ratio = statistics.median(down) / statistics.median(up)
            print(f"{'put p50 ratio down/up':<34} {ratio:.3f}")
    if args.skip_repair:
        return
    with tempfile.TemporaryDirectory(prefix="edgekv-bench-ae-") as tmp:
        path = write_cluster_file(
            tmp, regions=REGIONS[:2], nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
            cluster="bench", extra={"replication": {"antientropy_interval_s": 3600}},
        )  # fmt: skip
        t0 = time.perf_counter()
        preload_divergent(path, args.repair_keys)
        print(f"preloaded {args.repair_keys} keys ({args.repair_keys // 10} divergent) "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        with LocalCluster(path, proxies=False, log_level="warning") as cluster:
            t0 = time.perf_counter()
            cluster.start()
            peer_a = cluster.nodes["fra-1"].info["peer_endpoint"]
            peer_b = cluster.nodes["iad-1"].info["peer_endpoint"]
            while not asyncio.run(digests_equal(peer_a, peer_b)):
                time.sleep(0.2)
            took = time.perf_counter() - t0
            print(f"{'anti-entropy repair':<34} {args.repair_keys // 10} of {args.repair_keys} "
                  f"keys in {took:.2f} s (includes node start)")  # fmt: skip


if __name__ == "__main__":
    main()
