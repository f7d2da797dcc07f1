"""Repair that yields to foreground work: the repair pace follows how late the loop runs.

A fixed pace is wrong twice: on a node that serves many reads, or shares its
core with other work, 16 MiB/s of repair (decoding, applying, RocksDB's
flushes and compactions, the change feed) takes the time the reads need; on
an idle node, a lower fixed pace only makes the repair slower. So the node
watches what it can observe itself, the lateness of its event loop: a probe
(``run_lag_probe``) sleeps LAG_PROBE_INTERVAL_S at a time and measures by how much
each wake-up came late. A loop busy with repair slices, reads or anything
else, and a process the scheduler kept off the CPU, both show up as
lateness, and both are what a read arriving at that moment would wait for.

``PaceController`` turns the probes into the RepairPacer's rate, window by
window (AIMD, as TCP's congestion control): a window (WINDOW_S, at least
MIN_PROBES probes) in which more than LATE_FRACTION of the probes, and more
than one, came later than the target (replication.antientropy_lag_target_ms)
cuts the rate by CUT_FACTOR at once; any other window raises it by
RAISE_FRACTION of the maximum, up to the configured
replication.antientropy_bytes_per_s. The rule keeps the loop's 99th
percentile of lateness under the target, because that is what a read's 99th
percentile waits for: a read arriving at a random moment waits for the loop
as a probe does. (With a tenth of the probes, as first built, the loop's
lateness stayed above 2 ms in only ~1% of the probes during a repair, the
pace was hardly ever cut, and read p99 at the repaired node was 2.2-4.9x idle;
with 1%, 1.2-1.6x: bench/e2e/repair.py, README.) The rate never falls below the floor
(replication.antientropy_min_bytes_per_s), so a repair always progresses,
even on a node whose loop is late for reasons of its own.

Pure logic on a settable clock, driven by ``observe``; the probe is the only
part that sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from edgekv.limits import MIN_ANTIENTROPY_BYTES_PER_S
from edgekv.replication.pacer import RepairPacer

# How often the probe wakes (100 times a second: ~0.2% of a core).
LAG_PROBE_INTERVAL_S = 0.01
# How often the rate is decided: every ~200 probes on an idle loop, enough for
# a 99th percentile; a window also waits for MIN_PROBES, so one stall, however
# long (a GC pause), is one late probe, while a loop late all the time still cuts
# within a few seconds (20 probes 90 ms late each).
WINDOW_S = 2.0
MIN_PROBES = 20
# A window cuts when more than this fraction of its probes came late, and more
# than one (a single stall never cuts).
LATE_FRACTION = 0.01
CUT_FACTOR = 0.5
# A window without too many late probes raises the rate by this fraction of the
# maximum: from the floor back to the maximum in at most 16 windows (32 s).
RAISE_FRACTION = 1 / 16
# The default floor is the maximum over FLOOR_DIVISOR, and at least 1 MiB/s.
FLOOR_DIVISOR = 8
DEFAULT_LAG_TARGET_MS = 2


def default_floor(max_bytes_per_s: int) -> int:
    """The floor when the cluster file names none: 1/8 of the maximum, >= 1 MiB/s (<= max)."""
    return min(max_bytes_per_s, max(MIN_ANTIENTROPY_BYTES_PER_S, max_bytes_per_s // FLOOR_DIVISOR))


class PaceController:
    """Sets ``pacer``'s rate from the loop's lateness, between ``min_bytes_per_s`` and the max.

    ``observe(lag_s)`` records one probe; once ``window_s`` has passed since the
    window began (on ``clock``, monotonic seconds) and it holds MIN_PROBES probes,
    the window is decided: cut (``cuts_total`` counts them) or raise. The
    pacer starts at the maximum. Runs on one event loop (not thread-safe).
    """

    __slots__ = (
        "_clock", "_late", "_probes", "_window_start", "cuts_total", "lag_target_s",
        "late_probes_total", "max_bytes_per_s", "min_bytes_per_s", "pacer", "probes_total",
        "window_s",
    )  # fmt: skip

    def __init__(
        self,
        pacer: RepairPacer,
        *,
        max_bytes_per_s: int,
        min_bytes_per_s: int,
        lag_target_s: float,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_bytes_per_s <= max_bytes_per_s:
            raise ValueError(
                f"the repair pace floor {min_bytes_per_s} must be between 1 and "
                f"the maximum {max_bytes_per_s}"
            )
        if lag_target_s <= 0 or window_s <= 0:
            raise ValueError(f"need a positive lag target and window: {lag_target_s}, {window_s}")
        self.pacer = pacer
        self.max_bytes_per_s = max_bytes_per_s
        self.min_bytes_per_s = min_bytes_per_s
        self.lag_target_s = lag_target_s
        self.window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._probes = 0  # in the current window
        self._late = 0  # of those, later than the target
        self.probes_total = 0  # metrics, from here on
        self.late_probes_total = 0
        self.cuts_total = 0
        pacer.set_rate(max_bytes_per_s)

    @property
    def bytes_per_s(self) -> int:
        """The pace now."""
        return self.pacer.bytes_per_s

    def observe(self, lag_s: float) -> None:
        """One probe came ``lag_s`` late; decides the window when it is over.

        A probe later than a whole window starts a new window, undecided: no
        slice of repair holds the loop that long, so the process was stopped
        (SIGSTOP, a paused VM), and halving the pace would not have helped.
        """
        if lag_s > self.window_s:
            self._window_start, self._probes, self._late = self._clock(), 0, 0
            return
        self._probes += 1
        self.probes_total += 1
        if lag_s > self.lag_target_s:
            self._late += 1
            self.late_probes_total += 1
        now = self._clock()
        if now - self._window_start >= self.window_s and self._probes >= MIN_PROBES:
            self._decide(self._late > max(1.0, LATE_FRACTION * self._probes))
            self._window_start, self._probes, self._late = now, 0, 0

    def _decide(self, too_late: bool) -> None:
        rate = self.pacer.bytes_per_s
        if too_late:
            new = max(self.min_bytes_per_s, int(rate * CUT_FACTOR))
            if new < rate:
                self.cuts_total += 1
        else:
            new = min(self.max_bytes_per_s, rate + int(self.max_bytes_per_s * RAISE_FRACTION))
        if new != rate:
            self.pacer.set_rate(new)


async def run_lag_probe(
    controller: PaceController,
    *,
    interval_s: float = LAG_PROBE_INTERVAL_S,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Sleep ``interval_s`` at a time, forever; tell ``controller`` how late each wake-up was.

    uvloop's timers count whole milliseconds, so a wake-up may also come up to
    ~1 ms late, or a little early, on an idle loop: the target is set above that.
    """
    while True:
        start = clock()
        await sleep(interval_s)
        controller.observe(max(0.0, clock() - start - interval_s))
