"""When a dead record may be collected: the rule (storage/tombstones.py)."""

from __future__ import annotations

import time

import pytest

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS
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


def test_truncated_record_never_reads_as_dead() -> None:
    from edgekv.storage.tombstones import dead_since_ms

    assert dead_since_ms(b"\x01\x01") is None  # corrupt: skipped by a sweep, not a crash
