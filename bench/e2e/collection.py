"""What a collection sweep costs the event loop that serves requests.

Run: .venv/bin/python -m bench.e2e.collection [--keys 1000000] [--dead 0.1]

Builds an engine with --keys keys of 100 bytes, --dead of them deleted, then
sweeps it from a worker thread (as the node does) while a probe on the event
loop measures how late a 1 ms timer fires: the delay every request on the
node would see. Prints the probe's lag with no sweep running, then during
the sweep, with the sweep's duration and how many records it removed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import DeleteOp, Engine, PutOp


async def loop_lag_during(work_s: float | None, engine: Engine, horizon_ms: int) -> str:
    """Timer lag on this loop while sleeping ``work_s``, or while a sweep runs."""
    lags: list[float] = []
    done = False

    async def probe() -> None:
        while not done:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    task = asyncio.create_task(probe())
    started = time.perf_counter()
    if work_s is not None:
        await asyncio.sleep(work_s)
        what = "no sweep"
    else:
        removed = await asyncio.to_thread(engine.collection.collect_dead, horizon_ms)
        what = f"sweep removing {removed:,}"
    elapsed = time.perf_counter() - started
    done = True
    await task
    lags.sort()
    pick = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))] * 1e3  # noqa: E731
    return (
        f"{what:<24} {elapsed:6.2f} s   loop lag p50 {pick(0.5):5.2f} ms  "
        f"p99 {pick(0.99):5.2f} ms  max {lags[-1] * 1e3:5.2f} ms  (n={len(lags)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dead", type=float, default=0.1, help="fraction deleted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-gc-bench-") as tmp:
        engine = Engine(tmp, "bench")
        try:
            value = b"v" * 100
            for start in range(0, args.keys, 1000):
                stop = min(start + 1000, args.keys)
                engine.write([PutOp(b"key%09d" % i, value) for i in range(start, stop)])
            step = max(1, round(1 / args.dead)) if args.dead > 0 else 0
            if step:
                for start in range(0, args.keys, 1000 * step):
                    stop = min(start + 1000 * step, args.keys)
                    engine.write([DeleteOp(b"key%09d" % i) for i in range(start, stop, step)])
            horizon = wall_ms() + 1
            print(f"{args.keys:,} keys, {args.dead:.0%} deleted; sweep from a worker thread")
            baseline = asyncio.run(loop_lag_during(1.0, engine, horizon))
            print(baseline)
            print(asyncio.run(loop_lag_during(None, engine, horizon)))
            print(asyncio.run(loop_lag_during(None, engine, horizon)).replace(
                "sweep removing 0", "sweep, nothing dead"))  # fmt: skip
        finally:
            engine.close()


if __name__ == "__main__":
    main()
