"""What the change feed (storage/feed.py) costs writes, and how fast a Watch replays it.

Run: .venv/bin/python -m bench.e2e.watch_feed [--writes 20000] [--rounds 4]

1. Local puts (100 B and 4 KiB values) on a real engine, with the feed and with
   its staging switched off (the same engine, the hook replaced by a no-op):
   p50/p99 latency and CPU per put, rounds interleaved (ABAB) so drift on a
   loaded machine hits both alike. Ratios are the result.
2. Applied replication batches (500 records): the same comparison per record.
3. Replay: events/s of a Watch resumed from the start of a 50,000-entry feed.
All on this machine's shared cores: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgekv.config.watch import WatchSettings
from edgekv.coordinator.resumable import FeedWatches
from edgekv.replication.changefeed import ChangeFeed
from edgekv.storage.engine import Engine


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(op: Callable[[int], object], n: int) -> tuple[list[float], float]:
    """Per-call latencies in µs and CPU µs per call."""
    samples = []
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        op(i)
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples, (time.process_time() - cpu0) * 1e6 / n


def applier(engine: Engine, batches: list[list[tuple[bytes, bytes]]]) -> Callable[[int], int]:
    return lambda i: engine.apply_many(batches[i])


def feed_switch(engine: Engine) -> Callable[[bool], None]:
    real = engine.feed.stage

    def switch(on: bool) -> None:
        engine.feed.stage = real if on else (lambda wb, changes: None)  # type: ignore[method-assign]

    return switch


def bench_puts(root: Path, writes: int, rounds: int, size: int) -> None:
    engine = Engine(root / f"puts-{size}", "n1")
    switch = feed_switch(engine)
    value = b"x" * size
    results: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    try:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                switch(on)
                samples, cpu = timed(lambda i: engine.put(b"k%08d" % i, value), writes)
                results[on][0].extend(samples)
                results[on][1].append(cpu)
        report(f"put {size} B", results)
    finally:
        engine.close()


def bench_applies(root: Path, writes: int, rounds: int) -> None:
    origin = Engine(root / "origin", "o1")
    for i in range(writes):
        origin.put(b"a%08d" % i, b"y" * 100)
    records = [(e.key, e.record) for e in origin.read_log(1, writes)]
    origin.close()
    batches = [records[i : i + 500] for i in range(0, len(records), 500)]
    results: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for r in range(rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            engine = Engine(root / f"apply-{r}-{on}", "n1")  # fresh: every record wins
            feed_switch(engine)(on)
            samples, cpu = timed(applier(engine, batches), len(batches))
            results[on][0].extend(s / 500 for s in samples)
            results[on][1].append(cpu / 500)
            engine.close()
    report("apply (per record, 500/batch)", results)


def report(name: str, results: dict[bool, tuple[list[float], list[float]]]) -> None:
    (with_s, with_cpu), (without_s, without_cpu) = results[True], results[False]
    for label, s, cpu in (("with feed", with_s, with_cpu), ("without", without_s, without_cpu)):
        print(
            f"{name:<30} {label:<10} p50={pct(s, 0.5):7.2f} µs  p99={pct(s, 0.99):7.2f} µs  "
            f"cpu={statistics.mean(cpu):7.2f} µs/op"
        )
    print(
        f"{name:<30} ratio      p50 x{pct(with_s, 0.5) / pct(without_s, 0.5):.2f}  "
        f"p99 x{pct(with_s, 0.99) / pct(without_s, 0.99):.2f}  "
        f"cpu x{statistics.mean(with_cpu) / statistics.mean(without_cpu):.2f}"
    )


async def bench_replay(root: Path, entries: int) -> None:
    engine = Engine(root / "replay", "n1")
    try:
        signals = ChangeFeed(asyncio.get_running_loop())
        engine.add_listener(signals.on_change)
        feeds = FeedWatches(engine, signals, WatchSettings(), "n1")
        begin = feeds.token_now()
        for i in range(entries):
            engine.put(b"r%08d" % i, b"z" * 100)
        t0 = time.perf_counter()
        n = 0
        tail = feeds.tail(b"", await feeds.start(begin))
        async for _ in tail:
            n += 1
            if n == entries:
                break
        await tail.aclose()
        took = time.perf_counter() - t0
        print(f"replay {entries} entries: {entries / took:,.0f} events/s ({took:.2f} s)")
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_puts(root, args.writes, args.rounds, 100)
        bench_puts(root, args.writes // 4, args.rounds, 4096)
        bench_applies(root, args.writes, args.rounds)
        asyncio.run(bench_replay(root, 50_000))


if __name__ == "__main__":
    main()
