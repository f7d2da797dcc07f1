"""Last-writer-wins is commutative, idempotent and convergent, on real RocksDB engines.

Engines are created inside the test body (tempfile.TemporaryDirectory) because a
function-scoped tmp_path would be shared by every hypothesis example.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import DeleteOp, Engine, PutOp

# A minute ago: inside every engine's clock-skew bound, however long the run.
BASE = (time.time_ns() // 1_000_000 - 60_000) << LOGICAL_BITS
KEYS = [b"k1", b"k2", b"k3"]
ORIGINS = ["n1", "n2", "n3"]
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (key, timestamp offset, origin, value or None for a tombstone). A version names
# one write, so (key, timestamp, origin) is unique; small offsets make ties on
# the timestamp (decided by origin) common.
writes_strategy = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.integers(0, 12),
        st.sampled_from(ORIGINS),
        st.one_of(st.none(), st.binary(max_size=6)),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda w: (w[0], w[1], w[2]),
)

Write = tuple[bytes, int, str, bytes | None]


def encode(write: Write) -> tuple[bytes, bytes]:
    key, offset, origin, value = write
    record = native.encode_record(value is None, BASE + offset, 0, origin.encode(), value or b"")
    return key, record


def greatest(writes: list[Write]) -> dict[bytes, bytes]:
    """Per key, the record of the greatest (timestamp, origin) version."""
    best: dict[bytes, Write] = {}
    for w in writes:
        if w[0] not in best or (w[1], w[2]) > (best[w[0]][1], best[w[0]][2]):
            best[w[0]] = w
    return dict(encode(w) for w in best.values())


def contents(eng: Engine) -> dict[bytes, bytes]:
    """Every stored record, tombstones included."""
    data, _, _ = eng.column_families()
    return dict(data.items())


@contextmanager
def engines(count: int) -> Iterator[list[Engine]]:
    with tempfile.TemporaryDirectory(prefix="edgekv-lww-") as tmp:
        opened: list[Engine] = []
        try:
            for i in range(count):
                opened.append(Engine(Path(tmp) / f"e{i}", f"local{i}"))
            yield opened
        finally:
            for eng in opened:
                eng.close()


@SETTINGS
@given(writes=writes_strategy, data=st.data())
def test_apply_any_order_with_duplicates_converges_to_greatest_version(
    writes: list[Write], data: st.DataObject
) -> None:
    entries = [encode(w) for w in writes]
    expected = greatest(writes)
    n_engines = data.draw(st.integers(2, 3), label="engines")
    with engines(n_engines) as group:
        for eng in group:
            repeats = data.draw(st.lists(st.sampled_from(entries), max_size=len(entries)))
            order = data.draw(st.permutations(entries + repeats), label="order")
            batch = data.draw(st.integers(1, 8), label="batch")
            for i in range(0, len(order), batch):
                eng.apply_many(order[i : i + batch])
        # Convergent, and commutative: every order ends in the same state, the max.
        for eng in group:
            assert contents(eng) == expected
            assert eng.get_many(KEYS) == group[0].get_many(KEYS)
            assert eng.last_seq == 0  # applied records are not re-logged
        assert len({tuple(eng.digests.segment_digests(b"")) for eng in group}) == 1


@SETTINGS
@given(writes=writes_strategy, first=st.permutations(range(25)), again=st.randoms())
def test_apply_again_in_any_order_changes_nothing(
    writes: list[Write], first: list[int], again: random.Random
) -> None:
    entries = [encode(w) for w in writes]
    order = [entries[i] for i in first if i < len(entries)]
    with engines(1) as (eng,):
        changed = sum(eng.apply(key, record) for key, record in order)
        assert 1 <= changed <= len(entries)
        before = (contents(eng), eng.digests.segment_digests(b""), eng.last_seq)
        replay = list(entries)
        again.shuffle(replay)
        assert eng.apply_many(replay) == 0  # idempotent
        assert not any(eng.apply(key, record) for key, record in replay)
        assert (contents(eng), eng.digests.segment_digests(b""), eng.last_seq) == before
        assert contents(eng) == greatest(writes)


PAIRS = [(a, b) for a in range(3) for b in range(3) if a != b]
# Local writes on each engine, and log shipping between them in any interleaving.
steps_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(KEYS), st.binary(max_size=4)),
        st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("ship"), st.integers(0, 2), st.integers(0, 2), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=30,
)


@SETTINGS
@given(steps=steps_strategy, final_order=st.permutations(PAIRS))
def test_log_shipping_any_interleaving_converges(
    steps: list[tuple[str, int, object, object]], final_order: list[tuple[int, int]]
) -> None:
    with engines(3) as group:
        shipped = dict.fromkeys(PAIRS, 0)  # (source, destination) -> last seq sent

        def ship(src: int, dst: int, limit: int = 1000) -> None:
            entries = group[src].read_log(shipped[src, dst] + 1, limit)
            if entries:
                group[dst].apply_many([(e.key, e.record) for e in entries])
                shipped[src, dst] = entries[-1].seq

        for op, a, b, c in steps:
            if op == "put":
                group[a].put(b, c)  # type: ignore[arg-type]
            elif op == "delete":
                group[a].delete(b)  # type: ignore[arg-type]
            elif a != b:
                ship(a, b, c)  # type: ignore[arg-type]
        for src, dst in final_order:  # deliver everything that is left
            ship(src, dst)
        # Every local write of every engine, and the winner per key.
        logged = [(e.key, e.record) for eng in group for e in eng.read_log(1)]
        winners: dict[bytes, bytes] = {}
        for key, record in logged:
            current = winners.get(key)
            if current is None or native.record_version(record) > native.record_version(current):
                winners[key] = record
        for eng in group:
            assert contents(eng) == winners
        assert len({tuple(eng.digests.segment_digests(b"")) for eng in group}) == 1


def test_mixed_local_and_remote_batches_converge(tmp_path: Path) -> None:
    # A fixed example of the above that reads well when it fails.
    a, b = Engine(tmp_path / "a", "node-a"), Engine(tmp_path / "b", "node-b")
    try:
        a.write([PutOp(b"k1", b"a1"), PutOp(b"k2", b"a2")])
        b.write([PutOp(b"k2", b"b2"), DeleteOp(b"k1")])
        for src, dst in ((a, b), (b, a)):
            dst.apply_many([(e.key, e.record) for e in src.read_log(1)])
        assert contents(a) == contents(b)
        assert a.get(b"k1") is None and a.get(b"k2")[0] == b"b2"  # type: ignore[index]
    finally:
        a.close()
        b.close()
