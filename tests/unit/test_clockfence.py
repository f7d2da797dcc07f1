"""edgekv.cluster.clockfence: when a node's clock counts as ahead of its peers."""

from __future__ import annotations

import logging

import pytest

from edgekv.cluster.clockfence import ahead_of_peers_ms, peer_offset_ms, update_fence
from edgekv.errors import FailedPrecondition
from edgekv.storage.clock import LOGICAL_BITS, ClockFenced, HybridClock

BOUND = 500
NOW = 1_700_000_000_000


def clock_at(wall: int, last_ms: int = 0) -> HybridClock:
    return HybridClock(last_ms << LOGICAL_BITS, max_skew_ms=BOUND, wall_clock_ms=lambda: wall)


def test_peer_offset_is_measured_from_the_midpoint_of_the_round_trip() -> None:
    # Sent at 1000, answered at 1100 by a peer whose clock read 1050 - 2000.
    assert peer_offset_ms(1000, 1100, 1050 - 2000) == (-2000, 50)
    assert peer_offset_ms(1000, 1000, 1000) == (0, 0)


def test_no_reachable_peer_is_no_comparison() -> None:
    assert ahead_of_peers_ms(0, [], BOUND) is None


def test_one_peer_is_the_reference() -> None:
    assert ahead_of_peers_ms(0, [(-3000, 0)], BOUND) == 3000
    assert ahead_of_peers_ms(0, [(+3000, 0)], BOUND) == -3000


def test_two_peers_give_their_midpoint() -> None:
    assert ahead_of_peers_ms(0, [(-1000, 0), (0, 0)], BOUND) == 500  # not beyond the bound
    assert ahead_of_peers_ms(0, [(-2000, 0), (0, 0)], BOUND) == 1000


def test_many_peers_one_wrong_clock_fences_nobody_else() -> None:
    # Our clock is fine; one of four peers runs an hour behind.
    offsets = [(0, 1), (2, 1), (-3_600_000, 1), (-1, 1)]
    ahead = ahead_of_peers_ms(0, offsets, BOUND)
    assert ahead is not None and ahead < BOUND
    # Our clock runs 2 s ahead; one peer is as far ahead as we are: still the median.
    offsets = [(-2000, 1), (-2000, 1), (0, 1), (-2001, 1)]
    ahead = ahead_of_peers_ms(0, offsets, BOUND)
    assert ahead is not None and ahead > BOUND


def test_round_trip_uncertainty_never_fences_on_noise() -> None:
    # 550 ms behind us by the midpoint, but the round trip was 200 ms: maybe only 450.
    assert ahead_of_peers_ms(0, [(-550, 100)], BOUND) == 450


def test_hlc_lead_counts_only_beyond_the_bound() -> None:
    # A lead a peer's accepted timestamps can cause (<= bound) never fences.
    assert ahead_of_peers_ms(BOUND, [(0, 0)], BOUND) == 0
    # A lead from this node's own past clock does.
    assert ahead_of_peers_ms(10_000, [(0, 0)], BOUND) == 10_000


def test_update_fence_fences_a_clock_ahead_and_lifts_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = clock_at(NOW)
    with caplog.at_level(logging.WARNING):
        update_fence(clock, [(-5000, 1), (-5002, 1)])
    fence = clock.fence
    assert fence.fenced and fence.ahead_ms == 5000 and fence.peers == 2
    assert "clock fenced" in caplog.text and "replication.max_clock_skew_ms" in caplog.text
    error = fence.refuse()
    assert isinstance(error, ClockFenced) and isinstance(error, FailedPrecondition)
    assert "5000 ms ahead of its peers (its wall clock runs ahead; median of 2 reachable)" in str(
        error
    )
    assert "the limit is 500 ms (replication.max_clock_skew_ms)" in str(error)
    assert fence.refused_count == 1
    update_fence(clock, [(0, 1), (1, 1)])
    assert not fence.fenced
    update_fence(clock, [(-5000, 1)])
    update_fence(clock, [])  # every peer unreachable: nothing to compare
    assert not fence.fenced and fence.ahead_ms == 0


def test_hlc_ahead_after_the_clock_is_fixed_stays_fenced_until_wall_time_catches_up() -> None:
    wall = [NOW]
    # The HLC was persisted 10 s ahead (the clock was wrong), then the clock was fixed.
    clock = HybridClock(
        (NOW + 10_000) << LOGICAL_BITS, max_skew_ms=BOUND, wall_clock_ms=lambda: wall[0]
    )
    in_sync = [(0, 1), (0, 1)]
    update_fence(clock, in_sync)
    assert clock.fence.fenced and clock.fence.hlc_lead_ms == 10_000
    assert "hybrid clock is 10000 ms ahead of its own wall clock" in str(clock.fence.refuse())
    # Monotonic: the next timestamp is still above what was issued.
    assert clock.now() > (NOW + 10_000) << LOGICAL_BITS
    wall[0] = NOW + 9_000  # 1 s behind the high-water mark: still fenced
    update_fence(clock, in_sync)
    assert clock.fence.fenced and clock.fence.hlc_lead_ms == 1_000
    wall[0] = NOW + 9_600  # within the bound of it
    update_fence(clock, in_sync)
    assert not clock.fence.fenced


def test_hlc_far_ahead_of_the_wall_clock_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = clock_at(NOW, last_ms=NOW + 60_000)
    with caplog.at_level(logging.WARNING):
        update_fence(clock, [])
        update_fence(clock, [])
    assert caplog.text.count("hybrid clock is 60000 ms ahead of its wall clock") == 1
    assert not clock.fence.fenced  # no peer to compare with
