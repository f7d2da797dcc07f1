"""Collecting dead records: the rule (tombstones.py) and the engine's mechanics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv import native
from edgekv.storage import digest
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import Change, DeleteOp, Engine, PutOp
from edgekv.storage.tombstones import (
    collectable,
    collection_horizon_ms,
    dead_since_ms,
    reads_live,
)

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
        for key, _, _ in eng.list_bucket(b"", bucket)
        if bucket == native.key_bucket(key)
    ]


# -- the rule ------------------------------------------------------------------


def test_dead_since_of_each_kind_of_record(now: int) -> None:
    assert dead_since_ms(record(now - 5, tombstone=True)) == now - 5
    assert dead_since_ms(record(now - 5, expires=now + 9)) == now + 9
    assert dead_since_ms(record(now - 5)) is None


def test_collectable_only_strictly_before_the_horizon(now: int) -> None:
    tomb = record(now - 10, tombstone=True)
    assert collectable(tomb, now - 9)
    assert not collectable(tomb, now - 10)
    assert not collectable(tomb, 0)
    assert not collectable(record(1), now)  # live forever


def test_reads_live(now: int) -> None:
    assert reads_live(record(now), now)
    assert reads_live(record(now, expires=now + 1), now)
    assert not reads_live(record(now, expires=now), now)
    assert not reads_live(record(now - 1, tombstone=True), now)


def test_horizon_is_now_minus_grace_without_peers(now: int) -> None:
    assert collection_horizon_ms(now, 1000, []) == now - 1000


def test_horizon_is_held_back_by_the_least_synced_peer(now: int) -> None:
    assert collection_horizon_ms(now, 1000, [now, now - 5000, now - 2000]) == now - 5000


def test_a_peer_that_never_synced_stops_collection(now: int) -> None:
    assert collection_horizon_ms(now, 1000, [now, 0]) == 0


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
    assert engine.collect_dead(time.time_ns() // 1_000_000 + 1) == 2

    assert set(data(engine)) == {b"live", b"expiring-later"}
    assert sorted(index_keys(engine)) == [b"expiring-later", b"live"]
    assert engine.get(b"live") is not None and engine.get(b"deleted") is None
    # Digests equal those of a node that only ever held what is left.
    other = Engine(tmp_path / "other", "node-c")
    try:
        other.apply_many(data(engine).items())
        assert other.group_digests(b"") == engine.group_digests(b"")
    finally:
        other.close()


def test_collect_keeps_what_died_after_the_horizon(engine: Engine, now: int) -> None:
    engine.put(b"k", b"v")
    engine.delete(b"k")
    before = data(engine)
    assert engine.collect_dead(now - MINUTE) == 0
    assert data(engine) == before


def test_collect_with_no_horizon_is_a_no_op(engine: Engine) -> None:
    engine.delete(b"k")
    assert engine.collect_dead(0) == 0
    assert b"k" in data(engine)


def test_collect_walks_every_chunk(engine: Engine, now: int) -> None:
    engine.write([DeleteOp(b"d%04d" % i) for i in range(250)])
    engine.write([PutOp(b"p%04d" % i, b"v") for i in range(250)])
    assert engine.collect_dead(now + MINUTE, chunk=7) == 250
    assert len(data(engine)) == 250
    assert len(index_keys(engine)) == 250


def test_collected_digests_survive_reopen(tmp_path: Path, now: int) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    eng.put(b"a", b"1")
    eng.delete(b"b")
    eng.collect_dead(now + MINUTE)
    digests = eng.group_digests(b"")
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    try:
        assert eng.group_digests(b"") == digests
        assert set(data(eng)) == {b"a"}
    finally:
        eng.close()


def test_collect_does_not_touch_the_replication_log(engine: Engine, now: int) -> None:
    engine.delete(b"k")
    engine.collect_dead(now + MINUTE)
    assert [e.key for e in engine.read_log(0)] == [b"k"]


# -- the engine: applying records that are already collectable -------------------


def test_apply_collectable_tombstone_over_older_value_removes_it(engine: Engine, now: int) -> None:
    engine.apply(b"k", record(now - 3 * MINUTE))
    engine.collect_dead(now - MINUTE)  # sets the horizon; nothing to collect yet
    seen: list[list[Change]] = []
    engine.add_listener(lambda changes, _seq, _local: seen.append(changes))

    tomb = record(now - 2 * MINUTE, tombstone=True)
    assert engine.apply(b"k", tomb) is True

    assert data(engine) == {} and index_keys(engine) == []
    assert engine.group_digests(b"") == [0] * digest.GROUPS
    assert seen == [[Change(b"k", tomb)]]  # watchers see the delete


def test_apply_collectable_tombstone_with_nothing_stored_stores_nothing(
    engine: Engine, now: int
) -> None:
    engine.collect_dead(now - MINUTE)
    assert engine.apply(b"k", record(now - 2 * MINUTE, tombstone=True)) is False
    assert data(engine) == {}


def test_apply_collectable_tombstone_older_than_stored_changes_nothing(
    engine: Engine, now: int
) -> None:
    engine.collect_dead(now - MINUTE)
    newer = record(now - 30_000)
    engine.apply(b"k", newer)
    assert engine.apply(b"k", record(now - 2 * MINUTE, tombstone=True)) is False
    assert data(engine) == {b"k": newer}


def test_apply_collectable_record_over_stored_tombstone_is_not_a_visible_change(
    engine: Engine, now: int
) -> None:
    engine.apply(b"k", record(now - 3 * MINUTE, tombstone=True))
    engine.collect_dead(now - 4 * MINUTE)
    engine.gc_horizon_ms = now - MINUTE
    seen: list[list[Change]] = []
    engine.add_listener(lambda changes, _seq, _local: seen.append(changes))
    assert engine.apply(b"k", record(now - 2 * MINUTE, expires=now - 90_000)) is True
    assert data(engine) == {} and seen == []


def test_apply_tombstone_younger_than_the_horizon_is_stored(engine: Engine, now: int) -> None:
    engine.collect_dead(now - MINUTE)
    tomb = record(now - 30_000, tombstone=True)
    assert engine.apply(b"k", tomb) is True
    assert data(engine) == {b"k": tomb}
