"""Prints p50/p99 of the storage read path and the goal ratios, from one run.

Run: .venv/bin/python -m bench.micro.report [--rounds N]
     EDGEKV_BENCH_KEYS=100000 .venv/bin/python -m bench.micro.report   (a quicker run)

The same comparisons as test_storage_bench.py, timed call by call with
time.perf_counter_ns so the tail (p99) is visible too. The compared paths are
interleaved and take turns going first, so cache warming and machine noise hit
them alike. ``noop`` is the cost of the timing loop itself (the timer and the
same Python calls, measured on its own); the "net" ratios subtract it, which is
stricter than the raw ones for calls that take a few hundred nanoseconds. The
garbage collector is off while sampling, as in timeit.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from bench.micro import _db
from edgekv import _fallback, _speedups, native

Path_ = Callable[[int], object]


def measure(paths: dict[str, Path_], rounds: int) -> dict[str, tuple[float, float]]:
    """(p50, p99) in microseconds of each path, called ``rounds`` times, interleaved."""
    samples: dict[str, list[int]] = {name: [] for name in paths}
    clock = time.perf_counter_ns
    items = list(paths.items())
    n = len(items)
    for i in range(min(rounds, 1000)):  # warm-up, not recorded
        for _, fn in items:
            fn(i)
    gc.disable()
    try:
        for i in range(rounds):
            for j in range(n):
                name, fn = items[(i + j) % n]
                t0 = clock()
                fn(i)
                samples[name].append(clock() - t0)
    finally:
        gc.enable()
    out = {}
    for name, s in samples.items():
        s.sort()
        out[name] = (s[len(s) // 2] / 1000.0, s[int(len(s) * 0.99)] / 1000.0)
    return out


def noop(i: int) -> None:
    return None


def ratio_line(label: str, num: float, den: float, goal: str = "") -> str:
    return f"  {label:<50} {num / den:6.2f}x  {goal}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200_000, help="samples per point path")
    args = parser.parse_args()
    rounds, batch_rounds = args.rounds, max(1000, args.rounds // 20)

    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, rocksdict {importlib.metadata.version('rocksdict')}; "
        f"edgekv.native.ACTIVE = {native.ACTIVE}"
    )
    print(f"{_db.KEYS} keys of {_db.VALUE_BYTES} bytes; {rounds} samples per point path, "
          f"{batch_rounds} per get_many/scan path")  # fmt: skip

    record = _db.RECORD
    results = measure(
        {
            "decode_record native": lambda i: _speedups.decode_record(record),
            "decode_record fallback": lambda i: _fallback.decode_record(record),
        },
        rounds,
    )
    results |= measure({"noop (timing overhead)": lambda i: noop(i)}, rounds)
    with tempfile.TemporaryDirectory(prefix="edgekv-micro-") as tmp:
        t0 = time.perf_counter()
        engine = _db.build(Path(tmp) / "db", _db.KEYS)
        print(f"built the database in {time.perf_counter() - t0:.1f} s")
        try:
            data, _, _ = engine.column_families()
            bare_get, engine_get = data.get, engine.get
            fallback_get = _fallback.Reader(data.get).get
            # Each path reads its own stream of random keys: a key another path
            # has just read would be in the CPU caches and look cheaper.
            k1, k2, k3 = (_db.random_keys(rounds, seed=s) for s in (1, 2, 3))
            results |= measure(
                {
                    "get bare rocksdict": lambda i: bare_get(k1[i]),
                    "get engine (native)": lambda i: engine_get(k2[i]),
                    "get engine (fallback Reader)": lambda i: fallback_get(k3[i]),
                },
                rounds,
            )
            results |= measure({"noop (get loop)": lambda i: k1[i]}, rounds)
            # The same key again and again: RocksDB's cost at its lowest, so
            # the read path's own overhead weighs the most.
            hot = k1[0]
            results |= measure(
                {
                    "get bare rocksdict (hot key)": lambda i: bare_get(hot),
                    "get engine (native, hot key)": lambda i: engine_get(hot),
                },
                rounds,
            )
            n = _db.GET_MANY_KEYS
            b1, b2 = ([_db.random_keys(n, seed=s * 1_000_003 + i) for i in range(batch_rounds)]
                      for s in (1, 2))  # fmt: skip
            get_many = engine.get_many
            results |= measure(
                {
                    "get_many(100) bare rocksdict": lambda i: bare_get(b1[i]),
                    "get_many(100) engine": lambda i: get_many(b2[i]),
                },
                batch_rounds,
            )
            last = max(1, _db.KEYS - _db.SCAN_ITEMS)
            s1, s2 = ([_db.key_of(k) for k in random.Random(s).choices(range(last), k=batch_rounds)]
                      for s in (1, 2))  # fmt: skip
            n = _db.SCAN_ITEMS
            scan = engine.scan
            results |= measure(
                {
                    "scan(100) bare rocksdict items()": lambda i: list(
                        islice(data.items(from_key=s1[i]), n)
                    ),
                    "scan(100) engine": lambda i: scan(s2[i], b"", limit=n),
                },
                batch_rounds,
            )
        finally:
            engine.close()

    print(f"\n  {'path':<38} {'p50 us':>9} {'p99 us':>9}")
    for name, (p50, p99) in results.items():
        print(f"  {name:<38} {p50:9.3f} {p99:9.3f}")

    def p50(name: str) -> float:
        return results[name][0]

    def p99(name: str) -> float:
        return results[name][1]

    over_decode, over_get = p50("noop (timing overhead)"), p50("noop (get loop)")
    print("\nratios")
    print(ratio_line("decode: fallback / native, p50 (raw)", p50("decode_record fallback"),
                     p50("decode_record native"), "goal >= 3x"))  # fmt: skip
    print(ratio_line("decode: fallback / native, p50 (net of timing)",
                     p50("decode_record fallback") - over_decode,
                     p50("decode_record native") - over_decode, "goal >= 3x"))  # fmt: skip
    print(ratio_line("get: engine / bare rocksdict, p50 (raw)", p50("get engine (native)"),
                     p50("get bare rocksdict"), "goal <= 1.3x"))  # fmt: skip
    print(ratio_line("get: engine / bare rocksdict, p50 (net of timing)",
                     p50("get engine (native)") - over_get,
                     p50("get bare rocksdict") - over_get, "goal <= 1.3x"))  # fmt: skip
    hot_engine, hot_bare = p50("get engine (native, hot key)"), p50("get bare rocksdict (hot key)")
    print(ratio_line("get: engine / bare rocksdict, hot key, p50", hot_engine, hot_bare))
    print(ratio_line("get: engine / bare rocksdict, p99", p99("get engine (native)"),
                     p99("get bare rocksdict")))  # fmt: skip
    print(ratio_line("get: fallback Reader / bare rocksdict, p50",
                     p50("get engine (fallback Reader)"), p50("get bare rocksdict")))  # fmt: skip
    print(ratio_line("get_many(100): engine / bare, p50", p50("get_many(100) engine"),
                     p50("get_many(100) bare rocksdict")))  # fmt: skip
    print(ratio_line("scan(100): engine / bare items(), p50", p50("scan(100) engine"),
                     p50("scan(100) bare rocksdict items()")))  # fmt: skip


if __name__ == "__main__":
    main()
