"""One timer for the deadlines of many operations (the SDK's streamed transport).

A timer per operation (``call_later`` and its cancel, about 2 us a call in a
tight loop) was the largest single cost of the stream multiplexer after the
answer's future. Sequential calls with one timeout each add a deadline later
than the armed one, so the timer is re-armed about once per timeout instead of
being made and cancelled on every call. Event-loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadlines:
    """Request id -> deadline; ``expire(request_id)`` once its deadline has passed.

    ``loop`` is set by the owner before the first ``add`` (the stream's loop).
    ``discard`` an operation that ended first; the timer it armed may then fire
    for nothing, and re-arms for the earliest deadline left.
    """

    __slots__ = ("_at", "_due", "_expire", "_timer", "loop")

    def __init__(self, expire: Callable[[int], None]) -> None:
        self._expire = expire
        self.loop: asyncio.AbstractEventLoop | None = None
        self._due: dict[int, float] = {}  # request id -> its deadline (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer fires

    def add(self, request_id: int, at: float) -> None:
        """Expire ``request_id`` at loop time ``at`` unless it is discarded first."""
        self._due[request_id] = at
        if self._timer is None or at < self._at:
            self._arm(at)

    def discard(self, request_id: int) -> None:
        self._due.pop(request_id, None)

    def clear(self) -> None:
        """Forget every deadline (the stream ended: its operations already failed)."""
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return len(self._due)

    def _arm(self, at: float) -> None:
        assert self.loop is not None, "Deadlines.loop is set before the first add"
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = self.loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        self._timer = None
        assert self.loop is not None
        now, due = self.loop.time(), self._due
        for request_id in [r for r, at in due.items() if at <= now]:
            del due[request_id]
            self._expire(request_id)
        if due:
            self._arm(min(due.values()))


__all__ = ["Deadlines"]
