"""The database and inputs the storage micro benchmarks share (pytest-benchmark and report.py).

EDGEKV_BENCH_KEYS sets the number of keys (default 1,000,000; values are 100 bytes).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from edgekv import _speedups
from edgekv.storage.engine import Engine, PutOp

KEYS = int(os.environ.get("EDGEKV_BENCH_KEYS", "1000000"))
VALUE_BYTES = 100
BATCH = 1000  # keys per Engine.write while building
SCAN_ITEMS = 100
GET_MANY_KEYS = 100

# One record as stored: 100-byte value, a realistic origin and no expiry.
RECORD = _speedups.encode_record(False, 123456789 << 16, 0, b"fra-1", b"v" * VALUE_BYTES)


def key_of(i: int) -> bytes:
    return b"key%010d" % i


def build(path: Path, keys: int = KEYS) -> Engine:
    """An engine holding ``keys`` keys, flushed and compacted to a steady state.

    Writes go through Engine.write in batches of 1000 (the data, the log and the
    digest index, as in production); the log is trimmed as a replicated node
    would, since reads never touch it.
    """
    engine = Engine(path, "bench")
    value = random.Random(7).randbytes(VALUE_BYTES)
    for start in range(0, keys, BATCH):
        engine.write([PutOp(key_of(i), value) for i in range(start, min(keys, start + BATCH))])
        if start % 100_000 == 0:
            engine.trim_log(engine.last_seq + 1)
    engine.trim_log(engine.last_seq + 1)
    data, _, _ = engine.column_families()
    data.flush()
    data.compact_range(None, None)
    return engine


def random_keys(count: int, keys: int = KEYS, seed: int = 42) -> list[bytes]:
    """``count`` existing keys in a fixed pseudo-random order."""
    rnd = random.Random(seed)
    return [key_of(rnd.randrange(keys)) for _ in range(count)]


def scan_start(keys: int = KEYS) -> bytes:
    """A key with at least SCAN_ITEMS keys after it."""
    return key_of(max(0, keys // 2 - SCAN_ITEMS))
