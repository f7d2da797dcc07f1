"""The repair pace stays between its floor and its maximum, and converges to either.

Whatever the event loop does, window after window: the pace is never below the
floor (a repair always progresses) nor above replication.antientropy_bytes_per_s;
enough late windows in a row bring it to the floor, enough good ones back to the
maximum, and each cut halves it at least (multiplicative decrease).
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from edgekv.replication.pacecontrol import CUT_FACTOR, RAISE_FRACTION, WINDOW_S, PaceController
from edgekv.replication.pacer import RepairPacer

MIB = 1024 * 1024
PROBES = 20  # MIN_PROBES


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_window(clock: Clock, pace: PaceController, late: bool) -> None:
    for _ in range(PROBES):
        clock.now += WINDOW_S / PROBES * 1.01
        pace.observe(0.01 if late else 0.0)


@given(
    maximum=st.integers(MIB, 256 * MIB),
    floor_share=st.floats(0.01, 1.0),
    windows=st.lists(st.booleans(), max_size=80),
)
def test_pace_stays_in_bounds_and_converges(
    maximum: int, floor_share: float, windows: list[bool]
) -> None:
    floor = max(1, int(maximum * floor_share))
    clock = Clock()
    pace = PaceController(
        RepairPacer(maximum, clock=clock),
        max_bytes_per_s=maximum,
        min_bytes_per_s=floor,
        lag_target_s=0.002,
        clock=clock,
    )
    cuts = 0
    for late in windows:
        before = pace.bytes_per_s
        run_window(clock, pace, late)
        after = pace.bytes_per_s
        assert floor <= after <= maximum
        if late:
            assert after == max(floor, int(before * CUT_FACTOR))
            cuts += after < before
        else:
            assert after == min(maximum, before + int(maximum * RAISE_FRACTION))
    assert pace.cuts_total == cuts
    # Late windows in a row reach the floor; good ones the maximum.
    for _ in range(math.ceil(math.log2(maximum / floor)) + 1):
        run_window(clock, pace, late=True)
    assert pace.bytes_per_s == floor
    for _ in range(math.ceil(1 / RAISE_FRACTION)):
        run_window(clock, pace, late=False)
    assert pace.bytes_per_s == maximum
