"""The hybrid logical clock never goes backwards, whatever the wall clock does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgekv.storage.clock import LOGICAL_BITS, HybridClock, physical_ms

steps = st.lists(
    st.tuples(st.sampled_from(["now", "observe"]), st.integers(-5_000, 5_000), st.integers(0, 100)),
    min_size=1,
    max_size=200,
)


@given(steps=steps)
def test_now_strictly_increases_with_a_jumping_wall_clock(
    steps: list[tuple[str, int, int]],
) -> None:
    wall = [1_700_000_000_000]
    clock = HybridClock(wall_clock_ms=lambda: wall[0], max_skew_ms=500)
    issued: list[int] = []
    for op, jump, remote_ahead in steps:
        wall[0] += jump  # the wall clock steps forwards and backwards
        if op == "now":
            ts = clock.now()
            assert not issued or ts > issued[-1]
            assert ts > clock.last - 1
            issued.append(ts)
        else:
            remote = (wall[0] + remote_ahead) << LOGICAL_BITS
            clock.observe(remote)  # within the skew bound: never refused
            assert clock.last >= remote
            nxt = clock.now()
            assert nxt > remote and (not issued or nxt > issued[-1])
            issued.append(nxt)


@given(start=st.integers(0, 2**40), ahead=st.integers(501, 10**6))
def test_observe_refuses_beyond_skew_and_changes_nothing(start: int, ahead: int) -> None:
    clock = HybridClock(wall_clock_ms=lambda: start, max_skew_ms=500)
    before = clock.now()
    try:
        clock.observe((start + ahead) << LOGICAL_BITS)
    except Exception as exc:
        assert "max_clock_skew_ms" in str(exc)
    else:
        raise AssertionError("a timestamp beyond the skew bound was accepted")
    assert clock.last == before and clock.rejected_count == 1
    assert physical_ms(clock.now()) >= start
