"""A shared on-disk database for the storage micro benchmarks (built once per session)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.storage.engine import Engine, PutOp

KEYS = int(os.environ.get("EDGEKV_BENCH_KEYS", "1000000"))


def build(path: Path, keys: int) -> Engine:
    engine = Engine(path, "bench")
    value = os.urandom(100)
    for start in range(0, keys, 1000):
        engine.write([PutOp(b"key%010d" % i, value) for i in range(start, min(keys, start + 1000))])
        if start % 100_000 == 0:
            engine.trim_log(engine.last_seq + 1)  # the log is not what is measured
    engine.trim_log(engine.last_seq + 1)
    engine._db.flush()
    engine._db.compact_range(None, None)
    return engine


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = build(tmp_path_factory.mktemp("bench-db"), KEYS)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def sample_keys() -> list[bytes]:
    rnd = random.Random(42)
    return [b"key%010d" % rnd.randrange(KEYS) for _ in range(10_000)]
