"""Collecting dead records never breaks convergence, on real RocksDB engines.

The model of the replication gate (tombstones.py): a node collects with
horizon ``h`` only once it holds every record stamped before ``h`` (in a
cluster, a complete anti-entropy sync with every peer after those records
died guarantees that). Records may be delivered again later — a peer that has
not collected yet pushes its tombstones back — but only records some node can
still hold: collectable ones and the final winners. Whatever the order and the
collection points, every node ends with the last-writer-wins outcome minus the
records dead since before the final horizon, and with equal digests.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv import native
from edgekv.storage import tombstones
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import Engine

BASE_MS = time.time_ns() // 1_000_000 - 60_000  # inside every engine's skew bound
FINAL_HORIZON = BASE_MS + 25
KEYS = [b"k1", b"k2", b"k3"]
ORIGINS = [b"n1", b"n2"]

# (key, ms offset, origin, kind, expiry offset): kind 0 value, 1 tombstone, 2 expiring.
writes_strategy = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.integers(0, 20),
        st.sampled_from(ORIGINS),
        st.integers(0, 2),
        st.integers(1, 10),
    ),
    min_size=1,
    max_size=20,
    unique_by=lambda w: (w[0], w[1], w[2]),
)


def encode(write: tuple[bytes, int, bytes, int, int]) -> tuple[bytes, bytes, int]:
    """(key, record, physical ms of its timestamp)."""
    key, offset, origin, kind, expiry = write
    ms = BASE_MS + offset
    expires = ms + expiry if kind == 2 else 0
    value = b"" if kind == 1 else b"v%d" % offset
    return key, native.encode_record(kind == 1, ms << LOGICAL_BITS, expires, origin, value), ms


def winners_of(records: list[tuple[bytes, bytes, int]]) -> dict[bytes, bytes]:
    """Per key, the record with the greatest version (collectable or not)."""
    best: dict[bytes, bytes] = {}
    for key, record, _ in records:
        if key not in best or native.record_version(record) > native.record_version(best[key]):
            best[key] = record
    return best


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=writes_strategy, data=st.data())
def test_collection_at_any_safe_point_converges(writes: list, data: st.DataObject) -> None:
    records = [encode(w) for w in writes]
    final = winners_of(records)
    # A version is unique per key only: one write of several keys stamps them all alike.
    winners = {(k, native.record_version(r)) for k, r in final.items()}
    with tempfile.TemporaryDirectory(prefix="edgekv-gc-") as tmp:
        nodes = [Engine(Path(tmp) / f"e{i}", f"local{i}") for i in range(3)]
        try:
            for eng in nodes:
                order = data.draw(st.permutations(range(len(records))))
                delivered: set[int] = set()
                for step, i in enumerate(order):
                    key, record, _ = records[i]
                    eng.apply(key, record)
                    delivered.add(i)
                    if data.draw(st.booleans(), label=f"collect after {step}"):
                        pending = [ms for j, (_, _, ms) in enumerate(records) if j not in delivered]
                        safe = min([*pending, FINAL_HORIZON])
                        eng.collection.collect_dead(safe)
                    # A peer that has not collected yet may push back what it still holds.
                    again = data.draw(st.sampled_from(sorted(delivered)), label="redeliver")
                    key, record, _ = records[again]
                    if (key, native.record_version(record)) in winners or tombstones.collectable(
                        record, eng.collection.horizon_ms
                    ):
                        eng.apply(key, record)
                eng.collection.collect_dead(FINAL_HORIZON)
            want = {k: r for k, r in final.items() if not tombstones.collectable(r, FINAL_HORIZON)}
            for eng in nodes:
                stored, _, _ = eng.column_families()
                assert dict(stored.items()) == want
            assert len({tuple(eng.digests.segment_digests(b"")) for eng in nodes}) == 1
        finally:
            for eng in nodes:
                eng.close()
