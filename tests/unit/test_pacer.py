"""replication/pacer.py: the anti-entropy token bucket and paced, sliced applies.

A settable clock and a sleep that only advances it: no test here waits.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from edgekv.replication.pacer import (
    APPLY_SLICE_BYTES,
    APPLY_SLICE_RECORDS,
    APPLY_SPREAD,
    SLICE_BYTES,
    RepairPacer,
    apply_paced,
)
from edgekv.replication.paging import record_cost

MIB = 1024 * 1024


class FakeClock:
    """Monotonic seconds that move only when told, and a sleep that moves them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # a real sleep lets the loop's other work run


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pacer_at(
    clock: FakeClock, bytes_per_s: int = MIB, burst_bytes: int = 256 * 1024
) -> RepairPacer:
    return RepairPacer(bytes_per_s, burst_bytes=burst_bytes, clock=clock, sleep=clock.sleep)


def test_reserve_within_the_burst_goes_at_once(clock: FakeClock) -> None:
    pacer = pacer_at(clock)
    assert pacer.reserve(100 * 1024) == 0.0
    assert pacer.reserve(156 * 1024) == 0.0
    assert pacer.bytes_total == 256 * 1024 and pacer.waited_s_total == 0.0


def test_reserve_past_the_burst_waits_for_the_debt_at_the_rate(clock: FakeClock) -> None:
    pacer = pacer_at(clock)
    assert pacer.reserve(256 * 1024) == 0.0
    # The bucket is empty: 512 KiB more at 1 MiB/s is half a second away.
    assert pacer.reserve(512 * 1024) == pytest.approx(0.5)
    # A second caller at the same instant queues behind the first one's debt.
    assert pacer.reserve(256 * 1024) == pytest.approx(0.75)
    assert pacer.waited_s_total == pytest.approx(1.25)


def test_time_refills_the_bucket_but_never_past_the_burst(clock: FakeClock) -> None:
    pacer = pacer_at(clock)
    pacer.reserve(256 * 1024)
    clock.now += 0.125  # 128 KiB refilled
    assert pacer.reserve(128 * 1024) == 0.0
    clock.now += 3600.0  # an idle hour saves up one burst, not 3.5 GiB
    assert pacer.reserve(256 * 1024) == 0.0
    assert pacer.reserve(1024) == pytest.approx(1024 / MIB)


def test_an_item_larger_than_the_burst_goes_alone_after_its_debt(clock: FakeClock) -> None:
    pacer = pacer_at(clock, burst_bytes=64 * 1024)
    assert pacer.reserve(MIB) == pytest.approx((MIB - 64 * 1024) / MIB)


async def test_pace_sleeps_only_when_the_bucket_is_short(clock: FakeClock) -> None:
    pacer = pacer_at(clock)
    await pacer.pace(256 * 1024)
    assert clock.slept == []
    await pacer.pace(256 * 1024)
    assert clock.slept == [pytest.approx(0.25)]


async def test_paced_work_never_runs_ahead_of_the_rate_plus_one_burst(clock: FakeClock) -> None:
    rate, burst = 4 * MIB, 256 * 1024
    pacer = pacer_at(clock, bytes_per_s=rate, burst_bytes=burst)
    rnd = random.Random(12)
    starts: list[tuple[float, int]] = []  # (when the work may start, its bytes)
    for _ in range(2000):
        n = rnd.choice([rnd.randrange(1, 300_000), rnd.randrange(1, 30_000)])
        await pacer.pace(n)
        starts.append((clock.now, n))
        clock.now += rnd.choice([0.0, 0.0, 0.001, 0.05])  # the work itself, or idle time
    for i in range(0, len(starts), 37):
        for j in range(i, min(len(starts), i + 400), 11):
            moved = sum(n for _, n in starts[i : j + 1])
            elapsed = starts[j][0] - starts[i][0]
            # Work started in [t_i, t_j] fits one burst plus the rate, plus the
            # item at t_i itself when it was larger than the burst.
            assert moved <= burst + rate * elapsed + starts[i][1] + 1, (i, j, moved, elapsed)
    total_s = starts[-1][0] - starts[0][0]
    assert sum(n for _, n in starts) <= burst + rate * total_s + starts[0][1]


def test_pacer_refuses_a_rate_of_zero(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="positive"):
        RepairPacer(0, clock=clock)


async def test_apply_paced_applies_every_record_in_slices_at_the_pace(clock: FakeClock) -> None:
    pacer = pacer_at(clock, bytes_per_s=MIB, burst_bytes=SLICE_BYTES)
    records = [(b"k%04d" % i, b"v" * 24 * 1024) for i in range(100)]  # about 2.4 MiB
    records.append((b"huge", b"h" * (APPLY_SLICE_BYTES * 2)))  # larger than a slice: alone
    slices: list[list[tuple[bytes, bytes]]] = []

    def apply(batch: list[tuple[bytes, bytes]]) -> int:
        slices.append(batch)
        return len(batch) - 1  # "changed" counts are summed, whatever they are

    applied = await apply_paced(pacer, apply, records)
    assert [r for s in slices for r in s] == records
    assert applied == len(records) - len(slices)
    # Applied in batches of at most APPLY_SLICE_BYTES (one 24 KiB value each, ~0.15 ms).
    assert all(
        sum(record_cost(k, r) for k, r in s) <= APPLY_SLICE_BYTES or len(s) == 1 for s in slices
    )
    assert slices[-1] == [records[-1]] and len(slices) >= 100
    total = sum(record_cost(k, r) for k, r in records)
    assert pacer.bytes_total == total
    # Everything past the first burst waited at 1 MiB/s, and the last slice's pause: its
    # bytes at twice the pace, less the one slice the spreading bucket saved meanwhile.
    last = sum(record_cost(k, r) for k, r in slices[-1])
    spread = (last - APPLY_SLICE_BYTES) / (APPLY_SPREAD * MIB)
    assert sum(clock.slept) == pytest.approx((total - SLICE_BYTES) / MIB + spread)


async def test_apply_paced_cuts_small_records_into_short_slices_and_yields(
    clock: FakeClock,
) -> None:
    """1,000 records of 100 bytes: at most APPLY_SLICE_RECORDS per slice (~0.6 ms of the
    loop each), and other tasks on the loop run between two slices."""
    records = [(b"s%04d" % i, b"v" * 100) for i in range(1000)]
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    seen: list[tuple[int, int]] = []  # (records in the slice, ticks when it was applied)

    def apply(batch: list[tuple[bytes, bytes]]) -> int:
        seen.append((len(batch), ticks))
        return len(batch)

    other = asyncio.create_task(other_work())
    try:
        assert await apply_paced(pacer_at(clock, bytes_per_s=100 * MIB), apply, records) == 1000
    finally:
        other.cancel()
    assert max(n for n, _ in seen) <= APPLY_SLICE_RECORDS
    assert sum(n for n, _ in seen) == 1000
    assert all(b > a for (_, a), (_, b) in itertools.pairwise(seen))


async def test_apply_paced_spreads_a_page_over_its_time_at_the_pace(clock: FakeClock) -> None:
    """A page the bucket could take at once (ten 24 KiB values within the burst) is not
    applied in one burst: each slice is followed by a pause of its bytes at twice the pace,
    so the loop idles between slices (reads and gRPC's threads run)."""
    rate = 16 * MIB
    pacer = pacer_at(clock, bytes_per_s=rate, burst_bytes=SLICE_BYTES)
    records = [(b"k%04d" % i, b"v" * 24 * 1024) for i in range(10)]  # within one burst
    applied_at: list[float] = []

    def apply(batch: list[tuple[bytes, bytes]]) -> int:
        applied_at.append(clock.now)
        return len(batch)

    assert await apply_paced(pacer, apply, records) == 10
    cost = record_cost(*records[0])
    gaps = [b - a for a, b in itertools.pairwise(applied_at)]
    assert len(gaps) == 9
    assert all(gap == pytest.approx(cost / (APPLY_SPREAD * rate)) for gap in gaps)
    # Spread over half the time the pace gives the page: the bucket still sets the rate.
    assert applied_at[-1] - applied_at[0] >= 9 * cost / (2 * rate) - 1e-9


async def test_a_pause_that_ran_long_shortens_the_next(clock: FakeClock) -> None:
    """uvloop wakes a 0.7 ms sleep 1-2 ms later: the spreading bucket keeps what the
    pause gained (up to one slice), so the page still goes at twice the pace on average."""
    rate = 16 * MIB
    records = [(b"k%04d" % i, b"v" * 24 * 1024) for i in range(10)]
    cost = record_cost(*records[0])
    late_by = 0.0005

    async def late_sleep(seconds: float) -> None:
        await clock.sleep(seconds + late_by)

    pacer = RepairPacer(rate, burst_bytes=SLICE_BYTES, clock=clock, sleep=late_sleep)
    applied_at: list[float] = []

    def apply(batch: list[tuple[bytes, bytes]]) -> int:
        applied_at.append(clock.now)
        return len(batch)

    await apply_paced(pacer, apply, records)
    gaps = [b - a for a, b in itertools.pairwise(applied_at)]
    # After a pause 0.5 ms too long, the next one is 0.5 ms shorter (then late again).
    nominal = cost / (APPLY_SPREAD * rate)
    assert gaps[0] == pytest.approx(nominal + late_by)
    assert gaps[1] == pytest.approx(nominal)
    assert applied_at[-1] - applied_at[0] <= 9 * nominal + late_by + 1e-9


def test_set_rate_keeps_what_the_bucket_gained_at_the_old_rate(clock: FakeClock) -> None:
    pacer = pacer_at(clock, bytes_per_s=MIB, burst_bytes=MIB)
    pacer.reserve(MIB)  # empty
    clock.now += 0.5  # half a MiB gained at 1 MiB/s
    pacer.set_rate(4 * MIB)
    assert pacer.reserve(MIB // 2) == 0.0
    assert pacer.reserve(MIB) == pytest.approx(0.25)  # the debt, at the new rate
    with pytest.raises(ValueError, match="positive"):
        pacer.set_rate(0)
