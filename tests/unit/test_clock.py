"""edgekv.storage.clock: the hybrid logical clock with a controllable wall clock."""

from __future__ import annotations

import time

import pytest

from edgekv.errors import FailedPrecondition
from edgekv.storage.clock import (
    DEFAULT_MAX_SKEW_MS,
    LOGICAL_BITS,
    LOGICAL_MASK,
    ClockSkewError,
    HybridClock,
    from_wall_ms,
    physical_ms,
    wall_ms,
)

T0 = 1_700_000_000_000


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def make_clock(wall: Wall, last: int = 0, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> HybridClock:
    return HybridClock(last, max_skew_ms=max_skew_ms, wall_clock_ms=wall)


def test_wall_ms_is_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    assert before <= wall_ms() <= time.time_ns() // 1_000_000


def test_physical_and_logical_parts_round_trip() -> None:
    assert from_wall_ms(T0) == T0 << LOGICAL_BITS
    assert physical_ms(from_wall_ms(T0) | 123) == T0
    assert LOGICAL_MASK == (1 << LOGICAL_BITS) - 1 == 0xFFFF


def test_now_follows_wall_clock_when_ahead() -> None:
    wall = Wall()
    clock = make_clock(wall)
    assert clock.now() == from_wall_ms(T0)
    wall.ms += 5
    assert clock.now() == from_wall_ms(T0 + 5)
    assert clock.last == from_wall_ms(T0 + 5)


def test_now_counts_logically_when_wall_clock_stalls() -> None:
    clock = make_clock(Wall())
    stamps = [clock.now() for _ in range(5)]
    assert stamps == [from_wall_ms(T0) + i for i in range(5)]


def test_now_increases_when_wall_clock_steps_back() -> None:
    wall = Wall()
    clock = make_clock(wall)
    first = clock.now()
    wall.ms -= 60_000
    second = clock.now()
    assert second == first + 1 and physical_ms(second) == T0
    wall.ms = T0 + 1  # wall clock overtakes the logical count again
    assert clock.now() == from_wall_ms(T0 + 1)


def test_now_logical_overflow_still_increases() -> None:
    clock = make_clock(Wall())
    previous = clock.now()
    for _ in range(LOGICAL_MASK + 10):  # more than the logical field holds
        ts = clock.now()
        assert ts > previous
        previous = ts
    assert physical_ms(previous) == T0 + 1  # carried into the next millisecond


def test_restart_with_persisted_mark_never_reissues() -> None:
    wall = Wall()
    old = make_clock(wall)
    issued = [old.now() for _ in range(3)]
    wall.ms -= 3_600_000  # the restarted process sees an earlier wall clock
    new = make_clock(wall, last=old.last)
    assert new.last == issued[-1]
    assert new.now() > issued[-1]


def test_observe_remote_ahead_within_skew_advances() -> None:
    wall = Wall()
    clock = make_clock(wall)
    remote = from_wall_ms(T0 + DEFAULT_MAX_SKEW_MS) | 42  # exactly at the bound
    clock.observe(remote)
    assert clock.last == remote
    assert clock.now() == remote + 1
    assert clock.max_skew_seen_ms == DEFAULT_MAX_SKEW_MS
    assert clock.rejected_count == 0


def test_observe_remote_behind_changes_nothing() -> None:
    wall = Wall()
    clock = make_clock(wall)
    mine = clock.now()
    clock.observe(from_wall_ms(T0 - 1000))
    assert clock.last == mine and clock.max_skew_seen_ms == 0


def test_observe_beyond_skew_raises_and_changes_nothing() -> None:
    wall = Wall()
    clock = make_clock(wall, max_skew_ms=100)
    mine = clock.now()
    with pytest.raises(
        ClockSkewError,
        match=r"^remote timestamp is 101 ms ahead of this node's clock; "
        r"the limit is 100 \(max_clock_skew_ms\)$",
    ):
        clock.observe(from_wall_ms(T0 + 101))
    assert clock.last == mine
    assert clock.rejected_count == 1 and clock.max_skew_seen_ms == 101
    assert clock.now() == mine + 1


def test_clock_skew_error_is_failed_precondition() -> None:
    assert issubclass(ClockSkewError, FailedPrecondition)


def test_observe_skew_measured_against_current_wall_clock() -> None:
    wall = Wall()
    clock = make_clock(wall, max_skew_ms=100)
    remote = from_wall_ms(T0 + 150)
    with pytest.raises(ClockSkewError):
        clock.observe(remote)
    wall.ms += 50  # our clock caught up: now within the bound
    clock.observe(remote)
    assert clock.last == remote
