"""The hybrid logical clock never goes backwards, whatever the wall clock does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgekv.storage.clock import ClockSkewError, HybridClock, from_wall_ms, physical_ms

T0 = 1_700_000_000_000
MAX_SKEW_MS = 500

# ("now", wall jump, _) or ("observe", wall jump, remote offset from the wall in ms),
# remote offsets on both sides of the skew bound. "restart" reopens the clock
# from its persisted high-water mark, as the engine does.
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["now", "now", "observe", "restart"]),
        st.integers(-10_000, 10_000),
        st.integers(-10_000, 2 * MAX_SKEW_MS),
    ),
    min_size=1,
    max_size=200,
)


class Wall:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@given(steps=steps_strategy)
def test_now_strictly_increases_with_non_monotonic_wall_clock(
    steps: list[tuple[str, int, int]],
) -> None:
    wall = Wall()
    clock = HybridClock(max_skew_ms=MAX_SKEW_MS, wall_clock_ms=wall)
    issued: list[int] = []
    high = 0  # everything issued or observed so far
    for op, jump, offset in steps:
        wall.ms = max(0, wall.ms + jump)  # forwards and backwards
        if op == "restart":
            clock = HybridClock(clock.last, max_skew_ms=MAX_SKEW_MS, wall_clock_ms=wall)
        elif op == "observe":
            remote = from_wall_ms(wall.ms + offset)
            if offset > MAX_SKEW_MS:
                before = clock.last
                try:
                    clock.observe(remote)
                except ClockSkewError:
                    assert clock.last == before  # refused: nothing changed
                else:
                    raise AssertionError(f"accepted a timestamp {offset} ms ahead")
            else:
                clock.observe(remote)
                high = max(high, remote)
        else:
            ts = clock.now()
            assert ts > high  # above everything issued or observed
            assert physical_ms(ts) >= wall.ms  # never behind the wall clock
            issued.append(ts)
            high = ts
        assert clock.last == high
    assert issued == sorted(set(issued))


@given(
    start=st.integers(0, 2**40),
    ahead=st.integers(MAX_SKEW_MS + 1, 10**6),
    logical=st.integers(0, 0xFFFF),
)
def test_observe_beyond_skew_refused_and_changes_nothing(
    start: int, ahead: int, logical: int
) -> None:
    clock = HybridClock(max_skew_ms=MAX_SKEW_MS, wall_clock_ms=lambda: start)
    before = clock.now()
    try:
        clock.observe(from_wall_ms(start + ahead) | logical)
    except ClockSkewError as exc:
        assert f"{ahead} ms ahead" in str(exc) and "max_clock_skew_ms" in str(exc)
    else:
        raise AssertionError("a timestamp beyond the skew bound was accepted")
    assert clock.last == before and clock.rejected_count == 1
    assert clock.now() == before + 1


@given(
    start=st.integers(0, 2**40),
    ahead=st.integers(0, MAX_SKEW_MS),
    logical=st.integers(0, 0xFFFF),
)
def test_observe_within_skew_accepted_and_next_now_is_later(
    start: int, ahead: int, logical: int
) -> None:
    clock = HybridClock(max_skew_ms=MAX_SKEW_MS, wall_clock_ms=lambda: start)
    remote = from_wall_ms(start + ahead) | logical
    clock.observe(remote)
    assert clock.last == remote
    assert clock.now() > remote
