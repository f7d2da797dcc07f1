"""Embedded replica reads: in-process get vs the SDK's network get (and Redis), and staleness.

Run: .venv/bin/python -m bench.e2e.embedded [--keys 100000] [--samples 20000] [--seconds 5]

Starts one `edgekv serve` (CPU 1) and, when redis-server and redis-py are
installed, one Redis (CPU 1), preloads --keys keys of 100 bytes in each, then,
from one client process (CPU 0), in one run:

* get p50/p99/p999 and client CPU per op: ``Client(embedded=DATA_DIR)`` (the
  node's files, in-process), the same SDK over gRPC, Redis GET through redis-py;
  get_many of 100 keys embedded;
* the node's write-path cost of the change signal (one ``latest_sequence_number``
  and one 32-byte ``pwrite`` per commit), in-process;
* staleness while a writer process (CPU 1) puts --rate writes/s for --seconds:
  for each write, the time from its acknowledgement (the writer's clock) to
  the first embedded read that returns it (the reader polls without pause;
  CLOCK_MONOTONIC is shared by both processes), with reads catching up on
  read (the default) and with the catch-up thread alone (``catch_up_on_read``
  off: inotify wake-up, then catch-up); the reader's reported ``Staleness``;
  and embedded get latency under that load.

Goals (issue #14), as ratios in this run: embedded get p50 >= 10x faster than
Redis GET; staleness p99 <= 5 ms under 1,000 writes/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.e2e.load import percentiles, pin, row, timed_calls
from edgekv import Client, Put
from edgekv.client.embedded import EmbeddedReader
from edgekv.local.launcher import free_port, start_node, write_cluster_file
from edgekv.storage.replica_files import SignalWriter


def cpu_row(name: str, fn: object, n: int) -> dict[str, float]:
    """``row`` plus the client's CPU µs per call."""
    cpu0 = time.process_time()
    samples = timed_calls(fn, n)
    cpu_us = (time.process_time() - cpu0) * 1e6 / n
    result = row(name, samples)
    print(f"{'':<38} client CPU {cpu_us:7.1f} us/op")
    return {**result, "cpu_us": cpu_us}


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], object] | None:
    """A loopback redis-server and a redis-py client, or None (saying why) if unavailable."""
    server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        print("redis: skipped (redis-py is not installed: pip install redis hiredis)")
        return None
    if server is None:
        print("redis: skipped (no redis-server on PATH)")
        return None
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    return proc, client


_WINDOW = 64  # > the writer's 16 puts in flight: every acked key is polled
WRITER = """
import asyncio, json, sys, time
from edgekv import AsyncClient

async def main(endpoint, rate, seconds, out, prefix):
    acks = {}
    async with AsyncClient(endpoint, discover=False) as client:
        failed = []
        bound = asyncio.Semaphore(16)  # a paced writer, not a flood: 16 puts in flight at most
        async def put(n):
            try:
                async with bound:
                    await client.put(prefix + b"%08d" % n, b"x" * 100)
                acks[n] = time.monotonic_ns()
            except Exception as exc:  # counted, not fatal: the run reports it
                failed.append(repr(exc))
        tasks = []
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(put(n)))
        await asyncio.gather(*tasks)
        took = time.monotonic() - start
    with open(out, "w") as f:
        json.dump({"acks": acks, "seconds": took, "failed": failed[:5], "n_failed": len(failed)}, f)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4],
                 sys.argv[5].encode()))
"""


def staleness_run(
    endpoint: str, reader: EmbeddedReader, rate: float, seconds: float, tmp: Path, label: str
) -> dict[str, float]:
    """Start the writer; poll the keys it writes until seen; return visibility delays.

    The reader polls the next ``_WINDOW`` unseen keys with one get_many, so a
    write acknowledged out of order is seen as soon as it is visible.
    """
    out = tmp / f"acks-{label}.json"
    prefix = f"stale/{label}/".replace(" ", "-")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, endpoint, str(rate), str(seconds), str(out), prefix],
        cwd=Path(__file__).resolve().parents[2],
    )
    pin(writer.pid, 1)
    total = int(rate * seconds)
    seen: dict[int, int] = {}
    reported: list[float] = []
    read_us: list[float] = []
    keys = [prefix.encode() + b"%08d" % i for i in range(total)]
    last_miss: dict[int, int] = {}  # key -> start of the last read that did not return it
    n = 0
    acks: dict[int, int] | None = None  # known once the writer exits
    doc: dict[str, Any] = {}
    deadline = time.monotonic() + seconds * 4 + 30
    while n < total and time.monotonic() < deadline:
        if acks is None and writer.poll() is not None:
            if not out.exists():
                raise SystemExit(f"the writer failed (exit {writer.returncode}); see above")
            doc = json.loads(out.read_text())
            acks = {int(k): v for k, v in doc["acks"].items()}
        window = keys[n : n + _WINDOW]
        start_ns = time.monotonic_ns()
        t0 = time.perf_counter_ns()
        found = reader.get_many(window)
        read_us.append((time.perf_counter_ns() - t0) / 1000.0)
        now = time.monotonic_ns()
        for i, entry in enumerate(found):
            if entry is None:
                last_miss[n + i] = start_ns
            elif n + i not in seen:
                seen[n + i] = now
                if entry.staleness is not None:
                    reported.append(entry.staleness.lag_ms)
        while n < total and (n in seen or (acks is not None and n not in acks)):
            n += 1  # seen, or never acknowledged (a failed put)
    writer.wait(timeout=seconds * 4 + 60)
    if acks is None:
        doc = json.loads(out.read_text())
        acks = {int(k): v for k, v in doc["acks"].items()}
    took = doc["seconds"]
    if doc["n_failed"]:
        print(f"writer: {doc['n_failed']} puts failed, e.g. {doc['failed'][0]}")
    # Staleness: how long after its ack a read could still begin and miss the write (0 when
    # no read that began after the ack missed it). Visibility: ack -> the first read that
    # returned it, which also counts the reader's own gaps (preempted, between reads).
    stale_ms = [max(0.0, (last_miss.get(i, 0) - acks[i]) / 1e6) for i in seen if i in acks]
    visible_ms = [max(0.0, (seen[i] - acks[i]) / 1e6) for i in seen if i in acks]
    p, v = percentiles(stale_ms), percentiles(visible_ms)
    print(
        f"staleness, {label:<27} p50 {p['p50']:7.3f} ms  p99 {p['p99']:7.3f} ms  "
        f"p999 {p['p999']:7.3f} ms  ({len(stale_ms)} writes at {total / took:.0f}/s)"
    )
    print(f"  ack -> first read that saw it     p50 {v['p50']:7.3f} ms  p99 {v['p99']:7.3f} ms  "
          f"p999 {v['p999']:7.3f} ms")  # fmt: skip
    rp = percentiles(reported or [0.0])
    print(f"{'':<38} reported lag_ms p50 {rp['p50']:.3f}  p99 {rp['p99']:.3f}")
    r = row(f"  get_many({_WINDOW}) under load", read_us)
    return {"p50_ms": p["p50"], "p99_ms": p["p99"], "writes_per_s": total / took,
            "visible_p99_ms": v["p99"],
            "get_p50_us": r["p50"], "get_p99_us": r["p99"]}  # fmt: skip


def signal_cost(tmp: Path, n: int = 20000) -> float:
    """µs per commit the node spends on the change signal (seq lookup + pwrite)."""
    from edgekv.storage.engine import Engine

    with Engine(tmp / "signal-bench", "bench") as engine:
        data = engine.column_families()[0]
        writer = SignalWriter(tmp / "signal-bench", 1)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            writer.publish(data.latest_sequence_number())
        cost = (time.perf_counter_ns() - t0) / 1000.0 / n
        writer.close()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="writes/s of the writer")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; node, Redis and the writer "
          f"on CPU 1, the reading client on CPU 0; {args.keys} keys of 100 bytes")  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgekv-embedded-") as tmp_name:
        tmp = Path(tmp_name)
        node = start_node(write_cluster_file(tmp), "node-1", log_level="warning")
        data_dir = tmp / "data" / "node-1"
        redis_srv = start_redis(tmp)
        try:
            pin(node.pid, 1)
            if redis_srv is not None:
                pin(redis_srv[0].pid, 1)
            pin(0, 0)
            value = os.urandom(100)
            keys = [b"k%08d" % i for i in range(args.keys)]
            rnd = random.Random(7)
            picks = [rnd.choice(keys) for _ in range(args.samples)]
            with (
                Client(node.endpoint, discover=False) as net,
                Client(node.endpoint, discover=False, embedded=data_dir) as emb,
            ):
                assert emb.embedded, emb.embedded_error
                for i in range(0, len(keys), 1000):
                    net.write([Put(k, value) for k in keys[i : i + 1000]])
                for i in range(2000):  # warm every path
                    emb.get(picks[i])
                    net.get(picks[i])
                results["embedded get"] = cpu_row(
                    "embedded get (SDK, in-process)", lambda i: emb.get(picks[i]), args.samples
                )
                results["network get"] = cpu_row(
                    "SDK get over gRPC (same node)",
                    lambda i: net.get(picks[i % len(picks)]),
                    min(args.samples, 5000),
                )
                if redis_srv is not None:
                    rc = redis_srv[1]
                    pipe = rc.pipeline(transaction=False)  # type: ignore[attr-defined]
                    for i, k in enumerate(keys):
                        pipe.set(k, value)
                        if i % 1000 == 999:
                            pipe.execute()
                    pipe.execute()
                    for i in range(2000):
                        rc.get(picks[i])  # type: ignore[attr-defined]
                    results["redis get"] = cpu_row(
                        "Redis GET (redis-py, loopback)",
                        lambda i: rc.get(picks[i]),  # type: ignore[attr-defined]
                        args.samples,
                    )
                batches = [rnd.sample(keys, 100) for _ in range(args.samples // 20)]
                results["embedded get_many"] = cpu_row(
                    "embedded get_many (100 keys)", lambda i: emb.get_many(batches[i]),
                    len(batches),
                )  # fmt: skip
                cost = signal_cost(tmp)
                print(f"node's change-signal cost per commit: {cost:.2f} us (in-process)")
                reader = emb._embedded
                assert reader is not None
                results["stale on read"] = staleness_run(
                    node.endpoint, reader, args.rate, args.seconds, tmp, "catch up on read"
                )
                reader.catch_up_on_read = False
                results["stale thread"] = staleness_run(
                    node.endpoint, reader, args.rate, args.seconds, tmp, "catch-up thread only"
                )
                reader.catch_up_on_read = True
                print(f"reader catch-ups: {reader.catch_ups}, failures: {reader.failures}")
        finally:
            node.stop()
            if redis_srv is not None:
                redis_srv[0].terminate()
                redis_srv[0].wait(10)
    e, n = results["embedded get"], results["network get"]
    print()
    print(f"network get p50 / embedded get p50    {n['p50'] / e['p50']:7.1f}x")
    if "redis get" in results:
        r = results["redis get"]
        print(f"Redis GET p50 / embedded get p50      {r['p50'] / e['p50']:7.1f}x   (goal >= 10x)")
        print(f"Redis GET p99 / embedded get p99      {r['p99'] / e['p99']:7.1f}x")
    for key in ("stale on read", "stale thread"):
        s = results[key]
        print(f"staleness p99, {key:<22} {s['p99_ms']:7.3f} ms  (goal <= 5 ms at "
              f"{s['writes_per_s']:.0f} writes/s)")  # fmt: skip


if __name__ == "__main__":
    main()
