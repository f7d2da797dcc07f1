"""Collecting dead records from an engine (storage/collection.py): the sweep and apply."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv import native
from edgekv.storage import digest
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import DeleteOp, Engine, PutOp
from edgekv.storage.record import Change

MINUTE = 60_000


def record(ms: int, *, tombstone: bool = False, expires: int = 0, value: bytes = b"v") -> bytes:
    return native.encode_record(
        tombstone, ms << LOGICAL_BITS, expires, b"node-b", b"" if tombstone else value
    )


@pytest.fixture
def now() -> int:
    """Wall-clock ms when the test starts (records are stamped relative to it)."""
    return time.time_ns() // 1_000_000


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def data(eng: Engine) -> dict[bytes, bytes]:
    cf, _, _ = eng.column_families()
    return {k: v for k, v in cf.items()}  # RdictItems is not typed as an iterable of pairs


def index_keys(eng: Engine) -> list[bytes]:
    """Keys present in the digest index (every stored record has one entry)."""
    return [
        key
        for bucket in range(digest.BUCKETS)
        for key, _, _ in eng.digests.list_bucket(b"", bucket)
        if bucket == native.key_bucket(key)
    ]


# -- the engine: sweeping ------------------------------------------------------


def test_collect_removes_old_tombstones_and_expired_records(
    engine: Engine, tmp_path: Path, now: int
) -> None:
    engine.put(b"live", b"stays")
    engine.put(b"deleted", b"x")
    engine.delete(b"deleted")
    engine.apply(b"expired", record(now - 2 * MINUTE, expires=now - MINUTE))
    engine.apply(b"expiring-later", record(now - MINUTE, expires=now + MINUTE))

    # The tombstone and the expired record (the delete was stamped after now).
    assert engine.collection.collect_dead(time.time_ns() // 1_000_000 + 1) == 2

    assert set(data(engine)) == {b"live", b"expiring-later"}
    assert sorted(index_keys(engine)) == [b"expiring-later", b"live"]
    assert engine.get(b"live") is not None and engine.get(b"deleted") is None
    # Digests equal those of a node that only ever held what is left.
    other = Engine(tmp_path / "other", "node-c")
    try:
        other.apply_many(data(engine).items())
        assert other.digests.segment_digests(b"") == engine.digests.segment_digests(b"")
    finally:
        other.close()


def test_collect_keeps_what_died_after_the_horizon(engine: Engine, now: int) -> None:
    engine.put(b"k", b"v")
    engine.delete(b"k")
    before = data(engine)
    assert engine.collection.collect_dead(now - MINUTE) == 0
    assert data(engine) == before


def test_collect_with_no_horizon_is_a_no_op(engine: Engine) -> None:
    engine.delete(b"k")
    assert engine.collection.collect_dead(0) == 0
    assert b"k" in data(engine)


def test_collect_walks_every_chunk(engine: Engine, now: int) -> None:
    engine.write([DeleteOp(b"d%04d" % i) for i in range(250)])
    engine.write([PutOp(b"p%04d" % i, b"v") for i in range(250)])
    assert engine.collection.collect_dead(now + MINUTE, chunk=7) == 250
    assert len(data(engine)) == 250
    assert len(index_keys(engine)) == 250


def test_collected_digests_survive_reopen(tmp_path: Path, now: int) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    eng.put(b"a", b"1")
    eng.delete(b"b")
    eng.collection.collect_dead(now + MINUTE)
    digests = eng.digests.segment_digests(b"")
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    try:
        assert eng.digests.segment_digests(b"") == digests
        assert set(data(eng)) == {b"a"}
    finally:
        eng.close()


def test_collect_does_not_touch_the_replication_log(engine: Engine, now: int) -> None:
    engine.delete(b"k")
    engine.collection.collect_dead(now + MINUTE)
    assert [e.key for e in engine.read_log(0)] == [b"k"]


# -- the engine: applying records that are already collectable -------------------


def test_apply_collectable_tombstone_over_older_value_removes_it(engine: Engine, now: int) -> None:
    engine.apply(b"k", record(now - 3 * MINUTE))
    engine.collection.collect_dead(now - MINUTE)  # sets the horizon; nothing to collect yet
    seen: list[list[Change]] = []
    engine.add_listener(lambda changes, _seq, _local: seen.append(changes))

    tomb = record(now - 2 * MINUTE, tombstone=True)
    assert engine.apply(b"k", tomb) is True

    assert data(engine) == {} and index_keys(engine) == []
    assert engine.digests.segment_digests(b"") == [0] * digest.SEGMENTS
    assert seen == [[Change(b"k", tomb)]]  # watchers see the delete


def test_apply_collectable_tombstone_with_nothing_stored_stores_nothing(
    engine: Engine, now: int
) -> None:
    engine.collection.collect_dead(now - MINUTE)
    assert engine.apply(b"k", record(now - 2 * MINUTE, tombstone=True)) is False
    assert data(engine) == {}


def test_apply_collectable_tombstone_older_than_stored_changes_nothing(
    engine: Engine, now: int
) -> None:
    engine.collection.collect_dead(now - MINUTE)
    newer = record(now - 30_000)
    engine.apply(b"k", newer)
    assert engine.apply(b"k", record(now - 2 * MINUTE, tombstone=True)) is False
    assert data(engine) == {b"k": newer}


def test_apply_collectable_record_over_stored_tombstone_is_not_a_visible_change(
    engine: Engine, now: int
) -> None:
    engine.apply(b"k", record(now - 3 * MINUTE, tombstone=True))
    engine.collection.collect_dead(now - 4 * MINUTE)
    engine.collection.horizon_ms = now - MINUTE
    seen: list[list[Change]] = []
    engine.add_listener(lambda changes, _seq, _local: seen.append(changes))
    assert engine.apply(b"k", record(now - 2 * MINUTE, expires=now - 90_000)) is True
    assert data(engine) == {} and seen == []


def test_apply_tombstone_younger_than_the_horizon_is_stored(engine: Engine, now: int) -> None:
    engine.collection.collect_dead(now - MINUTE)
    tomb = record(now - 30_000, tombstone=True)
    assert engine.apply(b"k", tomb) is True
    assert data(engine) == {b"k": tomb}


# -- the sweep waits for max(died, arrived here) ----------------------------------


def test_record_that_arrived_after_dying_is_kept_until_the_horizon_passes_its_arrival(
    engine: Engine, now: int
) -> None:
    tomb = record(now - 2 * MINUTE, tombstone=True)  # died two minutes ago, arrives now
    assert engine.apply(b"k", tomb) is True
    arrived = time.time_ns() // 1_000_000
    assert engine._meta.get(b"arrived/k") is not None  # the side index (meta column family)
    # Dead since before this horizon, but arrived after it: a peer whose last sync
    # started in between may still hold the value it deleted.
    assert engine.collection.collect_dead(now - MINUTE, arrived_before_ms=now - MINUTE) == 0
    assert data(engine) == {b"k": tomb}
    assert engine.collection.collect_dead(arrived + 1, arrived_before_ms=arrived + 1) == 1
    assert data(engine) == {}
    assert engine._meta.get(b"arrived/k") is None  # the side index entry went with it


def test_local_delete_needs_no_arrival_entry(engine: Engine, now: int) -> None:
    engine.put(b"k", b"v")
    engine.delete(b"k")
    assert engine._meta.get(b"arrived/k") is None
    horizon = time.time_ns() // 1_000_000 + 1
    assert engine.collection.collect_dead(horizon, arrived_before_ms=horizon) == 1
