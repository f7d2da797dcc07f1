"""pytest-benchmark: the native read path vs the Python fallback and vs bare rocksdict.

Run: make bench  (or .venv/bin/python -m pytest bench/micro --benchmark-only)
Goals, as ratios in one run: engine get <= 1.3x a bare rocksdict get of the same
key on the same database; native decode >= 3x faster than the fallback.
"""

from __future__ import annotations

import itertools

import pytest

from edgekv import _fallback, _speedups
from edgekv.storage.engine import Engine

RECORD = _speedups.encode_record(False, 123456789 << 16, 0, b"fra-1", b"v" * 100)


@pytest.mark.benchmark(group="decode")
def test_decode_native(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(_speedups.decode_record, RECORD)


@pytest.mark.benchmark(group="decode")
def test_decode_fallback(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(_fallback.decode_record, RECORD)


@pytest.mark.benchmark(group="get")
def test_get_bare_rocksdict(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    keys = itertools.cycle(sample_keys)
    get = engine._db.get
    benchmark(lambda: get(next(keys)))


@pytest.mark.benchmark(group="get")
def test_get_engine_native(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    keys = itertools.cycle(sample_keys)
    get = engine.get
    benchmark(lambda: get(next(keys)))


@pytest.mark.benchmark(group="get")
def test_get_engine_fallback(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    keys = itertools.cycle(sample_keys)
    get = _fallback.Reader(engine._db.get).get
    benchmark(lambda: get(next(keys)))


@pytest.mark.benchmark(group="batch")
def test_get_many_100(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    batch = sample_keys[:100]
    benchmark(engine.get_many, batch)


@pytest.mark.benchmark(group="batch")
def test_scan_100(benchmark, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    benchmark(engine.scan, b"key0000500000", b"", limit=100)
