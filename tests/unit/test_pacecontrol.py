"""replication/pacecontrol.py: the repair pace follows the event loop's lateness (AIMD).

A settable clock and a probe sleep that only advances it: no test here waits.
"""

from __future__ import annotations

import asyncio

import pytest

from edgekv.limits import MIN_ANTIENTROPY_BYTES_PER_S
from edgekv.replication.pacecontrol import (
    CUT_FACTOR,
    LATE_FRACTION,
    MIN_PROBES,
    RAISE_FRACTION,
    WINDOW_S,
    PaceController,
    default_floor,
    run_lag_probe,
)
from edgekv.replication.pacer import RepairPacer

MIB = 1024 * 1024
MAX = 16 * MIB
TARGET_S = 0.002
PROBES = 200  # per window: one every 10 ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def controller_at(clock: FakeClock, floor: int = 2 * MIB) -> PaceController:
    pacer = RepairPacer(MIB, clock=clock)  # the controller starts it at the maximum
    return PaceController(
        pacer, max_bytes_per_s=MAX, min_bytes_per_s=floor, lag_target_s=TARGET_S, clock=clock
    )


def window(clock: FakeClock, pace: PaceController, late: int, lag_s: float = 0.005) -> None:
    """One window of PROBES probes, ``late`` of them ``lag_s`` late, the rest on time."""
    for i in range(PROBES):
        clock.now += WINDOW_S / PROBES * 1.001  # the last probe ends the window
        pace.observe(lag_s if i < late else 0.0005)


def test_pace_starts_at_the_maximum(clock: FakeClock) -> None:
    pace = controller_at(clock)
    assert pace.bytes_per_s == MAX == pace.pacer.bytes_per_s
    assert pace.cuts_total == 0


def test_a_window_with_too_many_late_probes_cuts_the_pace_at_once(clock: FakeClock) -> None:
    pace = controller_at(clock)
    window(clock, pace, late=int(LATE_FRACTION * PROBES) + 1)
    assert pace.bytes_per_s == int(MAX * CUT_FACTOR)
    assert pace.cuts_total == 1
    assert pace.late_probes_total == int(LATE_FRACTION * PROBES) + 1
    assert pace.probes_total == PROBES


def test_a_few_late_probes_do_not_cut(clock: FakeClock) -> None:
    """A compaction or a GC pause now and then is not a reason to slow the repair."""
    pace = controller_at(clock)
    for _ in range(10):
        window(clock, pace, late=int(LATE_FRACTION * PROBES))
    assert pace.bytes_per_s == MAX and pace.cuts_total == 0


def test_one_late_probe_never_cuts_however_few_the_probes(clock: FakeClock) -> None:
    """A window decided with only MIN_PROBES probes (a busy loop) holding one late
    probe: more than 1% of them, but a single stall is not a reason to cut."""
    pace = controller_at(clock)
    for i in range(MIN_PROBES):
        clock.now += WINDOW_S / MIN_PROBES * 1.01
        pace.observe(0.005 if i == 0 else 0.0005)
    assert pace.probes_total == MIN_PROBES and pace.late_probes_total == 1
    assert pace.bytes_per_s == MAX and pace.cuts_total == 0
    for i in range(MIN_PROBES):  # two late probes in the next one: a cut
        clock.now += WINDOW_S / MIN_PROBES * 1.01
        pace.observe(0.005 if i < 2 else 0.0005)
    assert pace.cuts_total == 1


def test_probes_late_by_no_more_than_the_target_do_not_count(clock: FakeClock) -> None:
    pace = controller_at(clock)
    window(clock, pace, late=PROBES, lag_s=TARGET_S)
    assert pace.bytes_per_s == MAX and pace.late_probes_total == 0


def test_the_pace_never_falls_below_the_floor(clock: FakeClock) -> None:
    pace = controller_at(clock, floor=3 * MIB)
    for _ in range(20):
        window(clock, pace, late=PROBES)
    assert pace.bytes_per_s == 3 * MIB
    assert pace.cuts_total == 3  # 16 -> 8 -> 4 -> 3 MiB/s; at the floor, no more cuts


def test_good_windows_raise_the_pace_slowly_back_to_the_maximum(clock: FakeClock) -> None:
    pace = controller_at(clock)
    for _ in range(3):
        window(clock, pace, late=PROBES)
    assert pace.bytes_per_s == 2 * MIB
    rates = []
    for _ in range(20):
        window(clock, pace, late=0)
        rates.append(pace.bytes_per_s)
    step = int(MAX * RAISE_FRACTION)
    assert rates[:3] == [2 * MIB + step, 2 * MIB + 2 * step, 2 * MIB + 3 * step]
    assert rates[-1] == MAX and max(rates) == MAX  # never past the maximum
    assert rates.index(MAX) == 13  # 14 MiB in 1 MiB steps: 14 good windows (~28 s)


def test_one_long_stall_is_one_late_probe_not_a_cut(clock: FakeClock) -> None:
    """A GC pause of 0.3 s: one probe comes very late, and the window waits for
    MIN_PROBES before it is decided."""
    pace = controller_at(clock)
    window(clock, pace, late=0)
    clock.now += 0.3
    pace.observe(0.3)
    window(clock, pace, late=0)
    assert pace.bytes_per_s == MAX and pace.cuts_total == 0 and pace.late_probes_total == 1


def test_a_probe_later_than_a_window_starts_a_new_window_undecided(clock: FakeClock) -> None:
    """The process was stopped (SIGSTOP, a paused VM): not a reason to cut, nor to raise."""
    pace = controller_at(clock)
    window(clock, pace, late=PROBES)  # cut once
    for i in range(PROBES - 1):
        clock.now += WINDOW_S / PROBES
        pace.observe(0.005 if i < 5 else 0.0)  # 5 late: would cut at the window's end
    clock.now += 2 * WINDOW_S
    pace.observe(2 * WINDOW_S)  # stopped for two windows: the window is dropped
    assert pace.bytes_per_s == int(MAX * CUT_FACTOR) and pace.cuts_total == 1
    window(clock, pace, late=0)
    assert pace.bytes_per_s == int(MAX * CUT_FACTOR) + int(MAX * RAISE_FRACTION)


def test_a_loop_late_all_the_time_cuts_within_min_probes(clock: FakeClock) -> None:
    """A loop so busy that each probe comes 90 ms late (10 a second) is judged once a
    window has passed with MIN_PROBES of them."""
    pace = controller_at(clock)
    step = WINDOW_S / MIN_PROBES * 1.01
    for _ in range(MIN_PROBES - 1):
        clock.now += step
        pace.observe(step - 0.01)
    assert pace.cuts_total == 0
    clock.now += step
    pace.observe(step - 0.01)
    assert pace.bytes_per_s == int(MAX * CUT_FACTOR) and pace.cuts_total == 1


def test_cut_applies_to_the_pacer_the_repair_uses(clock: FakeClock) -> None:
    pace = controller_at(clock)
    window(clock, pace, late=PROBES)
    pacer = pace.pacer
    pacer.reserve(pacer.burst_bytes)  # empty the bucket
    assert pacer.reserve(MIB) == pytest.approx(MIB / (MAX * CUT_FACTOR))


def test_default_floor_is_an_eighth_of_the_maximum_at_least_one_mib() -> None:
    assert default_floor(16 * MIB) == 2 * MIB
    assert default_floor(4 * MIB) == MIN_ANTIENTROPY_BYTES_PER_S
    assert default_floor(MIN_ANTIENTROPY_BYTES_PER_S) == MIN_ANTIENTROPY_BYTES_PER_S


def test_controller_refuses_a_floor_above_the_maximum(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="floor"):
        controller_at(clock, floor=MAX + 1)


async def test_lag_probe_reports_how_late_each_wake_up_came(clock: FakeClock) -> None:
    """The probe sleeps 10 ms at a time; a wake-up 3 ms late (the loop busy) counts 3 ms."""
    lateness = [0.0, 0.003, 0.0002, 0.05]
    seen: list[float] = []

    class Recorder:
        def observe(self, lag_s: float) -> None:
            seen.append(lag_s)
            if len(seen) == len(lateness):
                raise asyncio.CancelledError

    async def sleep(seconds: float) -> None:
        clock.now += seconds + lateness[len(seen)]

    with pytest.raises(asyncio.CancelledError):
        await run_lag_probe(Recorder(), interval_s=0.01, clock=clock, sleep=sleep)  # type: ignore[arg-type]
    assert seen == pytest.approx(lateness)
