"""Prints p50/p99 of the storage read path and the goal ratios, from one run.

Run: .venv/bin/python -m bench.micro.report  (EDGEKV_BENCH_KEYS=100000 for a quick run)
Each call is timed on its own with perf_counter_ns, interleaving the compared
paths so that machine noise hits them alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.micro.conftest import KEYS, build
from edgekv import _fallback, _speedups

ROUNDS = 200_000


def percentiles(samples: list[int]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2] / 1000.0, s[int(len(s) * 0.99)] / 1000.0


def measure(
    paths: dict[str, Callable[[int], object]], rounds: int
) -> dict[str, tuple[float, float]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    clock = time.perf_counter_ns
    items = list(paths.items())
    n = len(items)
    for i in range(rounds):
        # Rotate who goes first: the first read of a key warms the block cache
        # for the others, so a fixed order would favour the later paths.
        for j in range(n):
            name, fn = items[(i + j) % n]
            t0 = clock()
            fn(i)
            samples[name].append(clock() - t0)
    return {name: percentiles(s) for name, s in samples.items()}


def main() -> None:
    import random

    print(f"machine: {os.cpu_count()} CPUs; {KEYS} keys of 100 bytes; {ROUNDS} rounds each")
    record = _speedups.encode_record(False, 123456789 << 16, 0, b"fra-1", b"v" * 100)
    decoders = {
        "decode native": lambda i: _speedups.decode_record(record),
        "decode fallback": lambda i: _fallback.decode_record(record),
    }
    dec = measure(decoders, ROUNDS)
    with tempfile.TemporaryDirectory(prefix="edgekv-micro-") as tmp:
        t0 = time.perf_counter()
        engine = build(Path(tmp) / "db", KEYS)
        print(f"built the database in {time.perf_counter() - t0:.0f} s")
        rnd = random.Random(42)
        keys = [b"key%010d" % rnd.randrange(KEYS) for _ in range(ROUNDS)]
        bare, native_get = engine._db.get, engine.get
        fallback_get = _fallback.Reader(engine._db.get).get
        readers = {
            "rocksdict get (bare)": lambda i: bare(keys[i]),
            "engine get (native)": lambda i: native_get(keys[i]),
            "engine get (fallback)": lambda i: fallback_get(keys[i]),
        }
        gets = measure(readers, ROUNDS)
        engine.close()
    for name, (p50, p99) in {**dec, **gets}.items():
        print(f"{name:<24} p50 {p50:7.3f} us   p99 {p99:7.3f} us")
    speedup = dec["decode fallback"][0] / dec["decode native"][0]
    print(f"native decode speed-up vs fallback  {speedup:.2f}x (goal >= 3x)")
    ratio = gets["engine get (native)"][0] / gets["rocksdict get (bare)"][0]
    print(f"engine get / bare rocksdict get p50 {ratio:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
