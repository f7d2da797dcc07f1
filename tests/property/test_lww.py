"""Last-writer-wins apply is commutative, idempotent and convergent (real RocksDB)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import Engine

BASE = (time.time_ns() // 1_000_000 - 60_000) << LOGICAL_BITS  # a minute ago: within skew

record_strategy = st.tuples(
    st.sampled_from([b"k1", b"k2", b"k3"]),
    st.integers(0, 50),  # timestamp offset: collisions on purpose
    st.sampled_from(["n1", "n2", "n3"]),
    st.one_of(st.none(), st.binary(max_size=8)),  # None = tombstone
)


def encode(ts: int, origin: str, value: bytes | None) -> bytes:
    return native.encode_record(value is None, BASE + ts, 0, origin.encode(), value or b"")


def winner(records: list[tuple[bytes, int, str, bytes | None]]) -> dict[bytes, bytes]:
    """The expected stored record per key: the greatest (timestamp, origin)."""
    best: dict[bytes, tuple[tuple[int, str], bytes]] = {}
    for key, ts, origin, value in records:
        version = (ts, origin)
        if key not in best or best[key][0] < version:
            best[key] = (version, encode(ts, origin, value))
    return {k: v for k, (_, v) in best.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record_strategy, min_size=1, max_size=30),
    orders=st.lists(st.randoms(use_true_random=False), min_size=2, max_size=3),
    batch=st.integers(1, 7),
)
def test_any_order_any_repeats_converges_to_greatest_version(
    records: list[tuple[bytes, int, str, bytes | None]], orders: list, batch: int
) -> None:
    # A version names one write: the same (key, timestamp, origin) is always the
    # same record in a real cluster, so keep the first of any generated repeat.
    unique: dict[tuple[bytes, int, str], bytes | None] = {}
    for key, ts, origin, value in records:
        unique.setdefault((key, ts, origin), value)
    records = [(k, ts, o, v) for (k, ts, o), v in unique.items()]
    expected = winner(records)
    with tempfile.TemporaryDirectory() as tmp:
        engines = [Engine(Path(tmp) / f"e{i}", f"local{i}") for i in range(len(orders))]
        try:
            for eng, rnd in zip(engines, orders, strict=True):
                shuffled = [(k, encode(ts, o, v)) for k, ts, o, v in records]
                shuffled += rnd.sample(shuffled, k=len(shuffled) // 2)  # duplicates
                rnd.shuffle(shuffled)
                for i in range(0, len(shuffled), batch):
                    eng.apply_many(shuffled[i : i + batch])
                # Applying everything again changes nothing (idempotent).
                assert eng.apply_many(shuffled) == 0
            for eng in engines:
                assert {k: eng.get_record(k) for k in expected} == expected
            digests = {tuple(eng.group_digests(b"")) for eng in engines}
            assert len(digests) == 1  # anti-entropy sees them as equal
        finally:
            for eng in engines:
                eng.close()
