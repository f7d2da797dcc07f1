"""Hybrid logical clock: one 64-bit integer, wall milliseconds high, a counter low.

``timestamp = (wall_ms << 16) | logical``. Timestamps a node issues strictly
increase, even when the wall clock steps back; a timestamp seen from a peer
(``observe``) pushes the clock forward so causally later writes order later.
The node persists the clock's high-water mark with every write (engine.py), so
a restart never reissues a timestamp.

Test hook, for tests only: ``EDGEKV_TEST_CLOCK_OFFSET_MS`` (read once, at
import) shifts this process's wall clock by that many milliseconds, so a test
can start a real node whose clock runs ahead or behind. TTL expiry checks of
the compiled read path use the real clock. Never set it in production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from edgekv.errors import FailedPrecondition

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
DEFAULT_MAX_SKEW_MS = 500


# Tests only (module docstring): a skew applied to this process's wall clock.
TEST_CLOCK_OFFSET_MS = int(os.environ.get("EDGEKV_TEST_CLOCK_OFFSET_MS") or 0)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000 + TEST_CLOCK_OFFSET_MS


def physical_ms(timestamp: int) -> int:
    """The wall-clock milliseconds part of an HLC timestamp."""
    return timestamp >> LOGICAL_BITS


def from_wall_ms(ms: int) -> int:
    """The smallest HLC timestamp at wall time ``ms``."""
    return ms << LOGICAL_BITS


class ClockSkewError(FailedPrecondition):
    """A peer's timestamp is further ahead of our wall clock than max_skew_ms allows."""


class ClockFence:
    """Whether this node's clock is trusted to version writes it acknowledges.

    Written by membership after each heartbeat round (cluster/clockfence.py
    decides); read by the request layer on every write (one attribute check,
    ``fenced``). Plain attributes: a stale read only delays the change by one
    write.
    """

    __slots__ = ("ahead_ms", "fenced", "hlc_lead_ms", "max_skew_ms", "peers", "refused_count")

    def __init__(self, max_skew_ms: int) -> None:
        self.max_skew_ms = max_skew_ms
        self.fenced = False
        self.ahead_ms = 0  # how far the timestamps we issue run ahead of the peers (estimate)
        self.hlc_lead_ms = 0  # how far the HLC high-water mark is ahead of our own wall clock
        self.peers = 0  # reachable peers the estimate is based on
        self.refused_count = 0  # writes refused while fenced

    def refuse(self) -> ClockFenced:
        """The error for a write refused while fenced (and counts it)."""
        self.refused_count += 1
        why = (
            f"its hybrid clock is {self.hlc_lead_ms} ms ahead of its own wall clock"
            if self.hlc_lead_ms > self.max_skew_ms
            else "its wall clock runs ahead"
        )
        return ClockFenced(
            f"this node's clock is {self.ahead_ms} ms ahead of its peers ({why}; median of "
            f"{self.peers} reachable); the limit is {self.max_skew_ms} ms "
            f"(replication.max_clock_skew_ms); writes are refused here until it is back in "
            f"bounds: fix the clock (NTP) or write through another node"
        )


class ClockFenced(FailedPrecondition):
    """A write refused because this node's clock runs too far ahead of its peers."""


class HybridClock:
    """A per-node hybrid logical clock.

    Not thread-safe by itself: the engine calls it under its write lock.
    ``max_skew_ms`` bounds how far ahead of local wall time an observed timestamp
    may be; a node whose clock runs ahead would otherwise win every conflict.
    """

    __slots__ = (
        "_last", "_wall_ms", "fence", "max_skew_ms", "max_skew_seen_ms", "rejected_count",
    )  # fmt: skip

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
        self.fence = ClockFence(max_skew_ms)  # set by membership, checked by the request layer

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

    def lead_ms(self) -> int:
        """How far the high-water mark is ahead of local wall time (0 if not ahead).

        Large after the wall clock was stepped back (a fixed clock): timestamps
        stay monotonic, so the node keeps issuing that far ahead until wall
        time catches up.
        """
        return max(0, (self._last >> LOGICAL_BITS) - self._wall_ms())

    def skew_limit(self) -> int:
        """The smallest timestamp ``observe`` would refuse now (too far ahead of wall time)."""
        return (self._wall_ms() + self.max_skew_ms + 1) << LOGICAL_BITS

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
