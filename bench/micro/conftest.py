"""Fixtures for the storage micro benchmarks: one database, built once.

After the run, the goal ratios (from the medians pytest-benchmark measured) are
printed below its tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.micro import _db
from edgekv.storage.engine import Engine

# benchmark name -> median seconds, filled in by the benchmarks themselves.
MEDIANS: dict[str, float] = {}

GOALS = [
    # (label, numerator, denominator, goal, "<=" or ">=")
    ("engine get / bare rocksdict get", "get_engine_native", "get_bare_rocksdict", 1.3, "<="),
    ("fallback decode / native decode", "decode_fallback", "decode_native", 3.0, ">="),
    ("engine get_many(100) / bare multi-get", "get_many_engine", "get_many_bare_rocksdict", None,
     ""),
    ("engine scan(100) / bare iteration", "scan_engine", "scan_bare_rocksdict", None, ""),
]  # fmt: skip


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An Engine over EDGEKV_BENCH_KEYS keys of 100 bytes."""
    t0 = time.perf_counter()
    eng = _db.build(tmp_path_factory.mktemp("bench-db"), _db.KEYS)
    print(f"\nbuilt {_db.KEYS} keys in {time.perf_counter() - t0:.1f} s")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sample_keys(engine: Engine) -> list[bytes]:
    """10,000 random existing keys, read once so that every path starts warm.

    pytest-benchmark runs the paths one after another; without this the first
    one would pay the block-cache misses for the others.
    """
    keys = _db.random_keys(10_000)
    data, _, _ = engine.column_families()
    assert None not in data.get(keys)
    return keys


@pytest.fixture
def record_median(request: pytest.FixtureRequest, benchmark: Any) -> Iterator[None]:
    """Remember the benchmark's median under the test's name (minus "test_")."""
    yield
    if benchmark.stats is not None:  # None under --benchmark-disable
        MEDIANS[request.node.name.removeprefix("test_")] = benchmark.stats.stats.median


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = []
    for label, num, den, goal, op in GOALS:
        if num in MEDIANS and den in MEDIANS:
            ratio = MEDIANS[num] / MEDIANS[den]
            target = f"  (goal {op} {goal}x)" if goal else ""
            lines.append(f"{label:<40} {ratio:5.2f}x{target}")
    if lines:
        terminalreporter.section("edgekv goal ratios (medians)")
        for line in lines:
            terminalreporter.write_line(line)
