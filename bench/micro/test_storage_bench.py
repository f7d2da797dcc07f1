"""pytest-benchmark: the native read path vs the Python fallback and vs bare rocksdict.

Run: make bench, or
    .venv/bin/python -m pytest bench/micro --benchmark-only
    EDGEKV_BENCH_KEYS=100000 .venv/bin/python -m pytest bench/micro --benchmark-only  (quicker)

Each group compares paths over the same database and the same keys, so the
relative figures pytest-benchmark prints are the ratios that matter. Goals:
engine get within 1.3x of a bare rocksdict get of the same key; native decode
at least 3x faster than the fallback. The ratios are printed after the tables.
"""

from __future__ import annotations

import itertools
from itertools import islice

import pytest

from bench.micro import _db
from edgekv import _fallback, _speedups
from edgekv.storage.engine import Engine

pytestmark = pytest.mark.usefixtures("record_median")


# -- decode_record, 100-byte value ---------------------------------------------


@pytest.mark.benchmark(group="decode_record (100-byte value)")
def test_decode_native(benchmark) -> None:  # type: ignore[no-untyped-def]
    assert benchmark(_speedups.decode_record, _db.RECORD)[4] == b"v" * _db.VALUE_BYTES


@pytest.mark.benchmark(group="decode_record (100-byte value)")
def test_decode_fallback(benchmark) -> None:  # type: ignore[no-untyped-def]
    assert benchmark(_fallback.decode_record, _db.RECORD)[4] == b"v" * _db.VALUE_BYTES


# -- point get of a random existing key, same database -------------------------


@pytest.mark.benchmark(group="get (random key)")
def test_get_bare_rocksdict(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = engine.column_families()
    get, keys = data.get, itertools.cycle(sample_keys)
    assert benchmark(lambda: get(next(keys))) is not None


@pytest.mark.benchmark(group="get (random key)")
def test_get_engine_native(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    get, keys = engine.get, itertools.cycle(sample_keys)
    assert benchmark(lambda: get(next(keys))) is not None


@pytest.mark.benchmark(group="get (random key)")
def test_get_engine_fallback(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = engine.column_families()
    get, keys = _fallback.Reader(data.get).get, itertools.cycle(sample_keys)
    assert benchmark(lambda: get(next(keys))) is not None


# -- get_many of 100 keys ------------------------------------------------------


def key_batches(sample_keys: list[bytes]) -> itertools.cycle[list[bytes]]:
    n = _db.GET_MANY_KEYS
    return itertools.cycle([sample_keys[i : i + n] for i in range(0, len(sample_keys), n)])


@pytest.mark.benchmark(group="get_many (100 random keys)")
def test_get_many_bare_rocksdict(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = engine.column_families()
    get, batches = data.get, key_batches(sample_keys)
    assert len(benchmark(lambda: get(next(batches)))) == _db.GET_MANY_KEYS


@pytest.mark.benchmark(group="get_many (100 random keys)")
def test_get_many_engine(benchmark, engine: Engine, sample_keys: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    get_many, batches = engine.get_many, key_batches(sample_keys)
    assert None not in benchmark(lambda: get_many(next(batches)))


# -- a 100-item scan -----------------------------------------------------------


@pytest.mark.benchmark(group="scan (100 items)")
def test_scan_bare_rocksdict(benchmark, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = engine.column_families()
    start, n = _db.scan_start(), _db.SCAN_ITEMS
    assert len(benchmark(lambda: list(islice(data.items(from_key=start), n)))) == n


@pytest.mark.benchmark(group="scan (100 items)")
def test_scan_bare_rdictiter(benchmark, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    # The same RdictIter calls Reader.scan makes (seek, valid, key, value, next), from Python.
    data, _, _ = engine.column_families()
    start, n = _db.scan_start(), _db.SCAN_ITEMS

    def walk() -> list[tuple[bytes, bytes]]:
        it = data.iter()
        it.seek(start)
        out = []
        while it.valid() and len(out) < n:
            out.append((it.key(), it.value()))
            it.next()
        return out

    assert len(benchmark(walk)) == n


@pytest.mark.benchmark(group="scan (100 items)")
def test_scan_engine(benchmark, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    start = _db.scan_start()
    page = benchmark(engine.scan, start, b"", limit=_db.SCAN_ITEMS)
    assert len(page.items) == _db.SCAN_ITEMS


@pytest.mark.benchmark(group="collection sweep (whole database, nothing dead)")
def test_collect_sweep(benchmark, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    # The recurring cost of collecting dead records: every gc_interval_s the whole
    # data column family is read, 256 records per hold of the write lock.
    removed = benchmark.pedantic(engine.collection.collect_dead, args=(1,), rounds=3, iterations=1)
    assert removed == 0
    per_record_us = benchmark.stats.stats.median / _db.KEYS * 1e6
    per_hold_ms = per_record_us * 0.256
    print(f"\ncollection sweep: {per_record_us:.2f} us per record, "
          f"so about {per_hold_ms:.2f} ms per 256-record hold of the write lock")  # fmt: skip
