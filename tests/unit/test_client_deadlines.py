"""client/_deadlines.py: one timer for many operations' deadlines.

Driven by a scripted clock (the loop's ``time`` and ``call_at``), so each case
says exactly when the timer is armed and what expires when it fires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekv.client._deadlines import Deadlines


class Timer:
    def __init__(self, at: float, fire: Callable[[], None]) -> None:
        self.at, self.fire, self.cancelled = at, fire, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """The two loop methods Deadlines uses; ``advance`` fires what is due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, fire: Callable[[], None]) -> Timer:
        timer = Timer(at, fire)
        self.timers.append(timer)
        return timer

    def armed(self) -> list[float]:
        return [t.at for t in self.timers if not t.cancelled]

    def advance(self, to: float) -> None:
        self.now = to
        for timer in sorted(self.timers, key=lambda t: t.at):
            if not timer.cancelled and timer.at <= to:
                self.timers.remove(timer)
                timer.fire()


def deadlines() -> tuple[Deadlines, Clock, list[int]]:
    clock, expired = Clock(), list[int]()
    d = Deadlines(expired.append)
    d.loop = clock  # type: ignore[assignment]
    return d, clock, expired


def test_sequential_calls_arm_one_timer_and_it_rearms_when_it_fires_for_nothing() -> None:
    d, clock, expired = deadlines()
    for i in range(1, 100):  # each call ends before the next: one timer for all
        clock.now = i * 0.001
        d.add(i, clock.now + 5.0)
        d.discard(i)
    assert clock.armed() == [5.001]  # the first call's deadline
    d.add(100, 5.5)
    clock.advance(5.001)  # fires for nothing: re-armed for the one left
    assert expired == [] and clock.armed() == [5.5]
    clock.advance(5.5)
    assert expired == [100] and clock.armed() == [] and len(d) == 0


def test_an_earlier_deadline_rearms_and_each_expires_at_its_own_time() -> None:
    d, clock, expired = deadlines()
    d.add(1, 5.0)
    d.add(2, 0.1)  # earlier than the armed timer: re-armed for it
    d.add(3, 0.1)
    assert clock.armed() == [0.1]
    clock.advance(0.1)
    assert sorted(expired) == [2, 3] and clock.armed() == [5.0]
    clock.advance(4.9)
    assert expired[2:] == []
    clock.advance(5.0)
    assert expired[2:] == [1]


def test_clear_forgets_everything_and_cancels_the_timer() -> None:
    d, clock, expired = deadlines()
    d.add(1, 1.0)
    d.clear()
    assert clock.armed() == [] and len(d) == 0
    clock.advance(2.0)
    assert expired == []
    d.add(2, 3.0)  # usable again (a reopened stream)
    assert clock.armed() == [3.0]


def test_an_expiry_that_adds_another_deadline_is_kept() -> None:
    clock, expired = Clock(), list[int]()
    d: Any = None

    def expire(request_id: int) -> None:
        expired.append(request_id)
        d.add(request_id + 10, clock.now + 1.0)  # e.g. a retry started from the callback

    d = Deadlines(expire)
    d.loop = clock
    d.add(1, 1.0)
    clock.advance(1.0)
    assert expired == [1] and clock.armed() == [2.0]
