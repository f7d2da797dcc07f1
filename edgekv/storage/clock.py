"""Hybrid logical clock: one 64-bit integer, wall milliseconds high, a counter low.

``timestamp = (wall_ms << 16) | logical``. Timestamps a node issues strictly
increase, even when the wall clock steps back; a timestamp seen from a peer
(``observe``) pushes the clock forward so causally later writes order later.
The node persists the clock's high-water mark with every write (engine.py), so
a restart never reissues a timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edgekv.errors import FailedPrecondition

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
DEFAULT_MAX_SKEW_MS = 500


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def physical_ms(timestamp: int) -> int:
    """The wall-clock milliseconds part of an HLC timestamp."""
    return timestamp >> LOGICAL_BITS


def from_wall_ms(ms: int) -> int:
    """The smallest HLC timestamp at wall time ``ms``."""
    return ms << LOGICAL_BITS


class ClockSkewError(FailedPrecondition):
    """A peer's timestamp is further ahead of our wall clock than max_skew_ms allows."""


class HybridClock:
    """A per-node hybrid logical clock.

    Not thread-safe by itself: the engine calls it under its write lock.
    ``max_skew_ms`` bounds how far ahead of local wall time an observed timestamp
    may be; a node whose clock runs ahead would otherwise win every conflict.
    """

    __slots__ = ("_last", "_wall_ms", "max_skew_ms", "max_skew_seen_ms", "rejected_count")

    def __init__(
        self,
        last: int = 0,
        *,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        wall_clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self._last = last  # highest timestamp issued or observed
        self._wall_ms = wall_clock_ms
        self.max_skew_ms = max_skew_ms
        self.max_skew_seen_ms = 0  # for metrics: how far ahead peers have been
        self.rejected_count = 0

    @property
    def last(self) -> int:
        """The high-water mark: no timestamp at or below it will be issued."""
        return self._last

    def now(self) -> int:
        """A new timestamp, greater than every one issued or observed before."""
        ts = self._wall_ms() << LOGICAL_BITS
        if ts <= self._last:
            ts = self._last + 1  # wall clock behind or equal: count logically
        self._last = ts
        return ts

    def observe(self, remote: int) -> None:
        """Advance past a peer's timestamp, unless it is too far in the future.

        Raises ClockSkewError (and changes nothing) when ``remote``'s wall part is
        more than ``max_skew_ms`` ahead of local wall time.
        """
        ahead_ms = (remote >> LOGICAL_BITS) - self._wall_ms()
        if ahead_ms > 0:
            self.max_skew_seen_ms = max(self.max_skew_seen_ms, ahead_ms)
            if ahead_ms > self.max_skew_ms:
                self.rejected_count += 1
                raise ClockSkewError(
                    f"remote timestamp is {ahead_ms} ms ahead of this node's clock; "
                    f"the limit is {self.max_skew_ms} (max_clock_skew_ms)"
                )
        if remote > self._last:
            self._last = remote
