"""Anti-entropy paced in bytes per second, and applied in small slices.

A repair that moves records as fast as the peers can send them saturates the
core of the node being repaired (decode, hash, write, then RocksDB's flushes
and compactions), and reads on that node queue behind it: measured, read p99
7-17x idle while 100,000 values of 24 KiB were repaired. One ``RepairPacer``
per node meters every byte that anti-entropy moves through it, whoever
started the sync: records it pulls, pushes, is pushed or serves to a fetch,
and bucket listings, at ``replication.antientropy_bytes_per_s``.

Repair work also comes in slices of at most ``SLICE_BYTES`` (fetch and push
pages, listings of ``LISTING_SLICE_BYTES``), applied on the event loop in
batches of at most ``APPLY_SLICE_BYTES`` and ``APPLY_SLICE_RECORDS``, yielding
to the loop between batches. rocksdict's ``write`` holds the GIL for the whole
WriteBatch (measured: 9-21 ms for 4 MiB, 0.66 ms of CPU for 246 KB), so a
worker thread never took the apply off the loop's path: it only added a third
thread contending for the GIL (with the loop and gRPC's poller) and a hand-off
per batch. Small batches applied inline hold the loop ~0.15 ms each (one 24 KiB
value) and at most ~0.6 ms (32 records of 100 bytes), and a read waiting for the
loop runs between two of them.

The slices of one page are also spread over the time the pace gives the page
(``spread``), not applied back to back as soon as the bucket holds their bytes.
A page of ten 24 KiB values applied in one burst kept the loop (and the core)
busy 2-3 ms at a time, about 30 times a second (measured with ``perf sched``:
the node's main thread ran 2-10 ms without a break), and every step of a read
in progress (gRPC's threads hand each one to the loop and back about three
times) waited for it: read p99 at a node repaired at 16 MiB/s was 4-5x idle.
Spread, the loop idles between slices and gRPC's threads run: at 8.4 MB/s,
read p99 came to 1.5x the reads in the repair's pauses (bench/e2e/repair.py).
The rate itself follows how late the node's event loop runs (pacecontrol.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S
from edgekv.replication.paging import Record, record_batches, record_cost

# The largest repair page (a single larger record goes alone): about ten 24 KiB
# values per round trip.
SLICE_BYTES = 256 * 1024
# The largest batch applied at once, on the loop (a single larger record goes
# alone). Measured in process (Engine.apply_many, RocksDB's flushes included):
# 24 KiB values 0.54 ms per 128 KiB batch (4.4 ms of CPU per MB), 0.13-0.15 ms
# per value applied alone (5.3-6.1 ms per MB); 100-byte values 65 us alone,
# 0.26 ms per 8, 0.58 ms per 32, 1.6 ms per 128. Reads wait behind one batch.
APPLY_SLICE_BYTES = 32 * 1024
APPLY_SLICE_RECORDS = 32
# The largest page of a bucket listing asked of a peer (keys and versions only,
# about 6,000 of them): listings write nothing, and smaller pages cost round
# trips (64 KiB pages made a sync of 1,000,000 small keys ~6x more of them).
LISTING_SLICE_BYTES = 256 * 1024
# How much faster than the pace the slices of one page may be applied: applied
# slices are metered by a second bucket, at APPLY_SPREAD x the pace and holding
# at most one slice, so each is followed by a pause of about its bytes at that
# rate (0.7 ms for 24 KiB at 16 MiB/s). The first bucket, not the spreading, sets
# the average rate; the loop is never busy with a whole page at once; and a pause
# that ran long (uvloop's timers count whole milliseconds) shortens the next.
APPLY_SPREAD = 2.0


class RepairPacer:
    """A token bucket of bytes: at most ``bytes_per_s`` on average, ``burst_bytes`` at once.

    ``reserve(n)`` takes ``n`` bytes now and says how long to wait before
    moving them; the work that follows its waits never runs ahead of
    ``burst_bytes + bytes_per_s * t`` bytes over any ``t`` seconds (an item
    larger than the burst goes alone, after the bucket has paid for it).
    Concurrent callers queue in time: each waits for the debt of those before
    it. Runs on one event loop (not thread-safe); ``clock`` is monotonic
    seconds and ``sleep`` waits on the loop, both settable for tests.
    """

    __slots__ = (
        "_clock", "_last", "_sleep", "_spread_last", "_spread_tokens", "_tokens", "burst_bytes",
        "bytes_per_s",
        "bytes_total", "waited_s_total",
    )  # fmt: skip

    def __init__(
        self,
        bytes_per_s: int = DEFAULT_ANTIENTROPY_BYTES_PER_S,
        *,
        burst_bytes: int = SLICE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if bytes_per_s < 1 or burst_bytes < 1:
            raise ValueError(f"pacing needs positive rates, got {bytes_per_s}, {burst_bytes}")
        self.bytes_per_s = bytes_per_s
        self.burst_bytes = burst_bytes
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._tokens = float(burst_bytes)  # may go negative: the debt of reservations ahead
        # The spreading bucket (APPLY_SPREAD): starts empty, holds at most one slice.
        self._spread_tokens = 0.0
        self._spread_last = self._last
        self.bytes_total = 0  # bytes reserved since start (metrics)
        self.waited_s_total = 0.0  # seconds callers were told to wait (metrics)

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes from the bucket now; seconds to wait before moving them (0: go)."""
        now = self._clock()
        refill = (now - self._last) * self.bytes_per_s
        self._tokens = min(float(self.burst_bytes), self._tokens + refill)
        self._last = now
        self._tokens -= n
        self.bytes_total += n
        if self._tokens >= 0:
            return 0.0
        # Go once the bucket has refilled the debt (not once it is full again).
        delay = -self._tokens / self.bytes_per_s
        self.waited_s_total += delay
        return delay

    def set_rate(self, bytes_per_s: int) -> None:
        """Pace at ``bytes_per_s`` from now on (what the bucket gained so far, at the old rate)."""
        if bytes_per_s < 1:
            raise ValueError(f"pacing needs a positive rate, got {bytes_per_s}")
        self.reserve(0)  # refill up to now at the old rate
        self.bytes_per_s = bytes_per_s

    async def pace(self, n: int) -> None:
        """Wait until ``n`` more bytes may move (at once when the bucket holds them)."""
        delay = self.reserve(n)
        if delay > 0:
            await self._sleep(delay)

    async def spread(self, n: int) -> float:
        """Pause after applying ``n`` bytes: until the spreading bucket, at APPLY_SPREAD x
        the pace, has paid for them (see above). Returns the pause (0: none was due)."""
        now = self._clock()
        rate = self.bytes_per_s * APPLY_SPREAD
        refill = (now - self._spread_last) * rate
        self._spread_tokens = min(float(APPLY_SLICE_BYTES), self._spread_tokens + refill) - n
        self._spread_last = now
        if self._spread_tokens < 0:
            delay = -self._spread_tokens / rate
            self.waited_s_total += delay
            await self._sleep(delay)
            return delay
        return 0.0


async def apply_paced(
    pacer: RepairPacer, apply: Callable[[list[Record]], int], records: list[Record]
) -> int:
    """``apply`` ``records`` in small slices, each paced, pausing between them.

    Slices hold at most APPLY_SLICE_BYTES and APPLY_SLICE_RECORDS (a larger
    record goes alone); after each, the loop is left to other work for a
    time in proportion to its bytes (``RepairPacer.spread``). Returns the sum
    of what ``apply`` returned (records that changed data). Each slice is its
    own batch: anti-entropy repairs key by key anyway.
    """
    applied = 0
    for batch in record_batches(records, APPLY_SLICE_BYTES, APPLY_SLICE_RECORDS):
        cost = sum(record_cost(key, record) for key, record in batch)
        await pacer.pace(cost)
        applied += apply(batch)
        if not await pacer.spread(cost):
            await asyncio.sleep(0)  # reads that arrived meanwhile go before the next slice
    return applied
