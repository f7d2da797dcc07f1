"""Received records set aside because their timestamp runs too far ahead of this node's clock.

A record whose HLC timestamp is more than ``max_clock_skew_ms`` ahead of local
wall time would drag this node's clock forward and win every conflict until
wall time caught up. Refusing the whole batch (as ``apply_many`` does in its
strict mode) blocks the origin's replication stream and anti-entropy behind
one record, so the peer plane applies with ``quarantine_skewed=True``: every
acceptable record of the batch is applied, and each too-far-ahead one is kept
here, in the ``meta`` column family, in the same WriteBatch:

    ``quarantine/ | key -> record``  (only the greatest version per key: LWW)

It stays until local wall time is within the bound of its timestamp, then it
is released: applied like any received record (last-writer-wins, so a newer
version that arrived meanwhile still wins), and removed from here, again in one
WriteBatch. ``Engine.apply_many`` releases due records first on every call and
``Engine.release_quarantined`` runs every heartbeat interval
(``run_quarantine_release``), so a record waits at most about that long past
its due time. A quarantined record is acknowledged to its sender: it is
durable here, so nothing acknowledged is lost. Until released it is not in
the data or digests (anti-entropy may fetch it again; it lands here again).

Counts are kept in memory (rebuilt at open) for metrics and the cheap
"anything due?" check on every apply. Values never reach the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rocksdict import ColumnFamily, Rdict, WriteBatch

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS

QUARANTINE_PREFIX = b"quarantine/"
_LOG_EVERY_S = 10.0  # at most one "set aside" warning per this many seconds

log = logging.getLogger(__name__)

# (key, record, version) of a received record too far ahead to apply now.
Skewed = tuple[bytes, bytes, tuple[int, str]]


class Quarantine:
    """The set-aside records of one engine; staged into the engine's WriteBatches.

    The engine calls every method under its write lock, except the counters,
    which metrics read as plain attributes.
    """

    def __init__(self, meta: tuple[Rdict, ColumnFamily]) -> None:
        self._meta, self._meta_handle = meta  # the engine's; dropped in ``release``
        self.held = 0  # records held now
        self.earliest_ms = 0  # smallest wall part of a held timestamp (0: none held)
        self.set_aside_total = 0  # records ever set aside (since open)
        self.released_total = 0  # records released since open (applied, or lost LWW)
        self._warned_at = 0.0
        for _, raw in self._items():
            self._count_held(raw)

    def release(self) -> None:
        """Drop the column-family handle: it keeps RocksDB (and its LOCK) open."""
        del self._meta_handle

    def _items(self) -> list[tuple[bytes, bytes]]:
        it = self._meta.iter()
        it.seek(QUARANTINE_PREFIX)
        out = []
        while it.valid() and it.key().startswith(QUARANTINE_PREFIX):
            out.append((it.key()[len(QUARANTINE_PREFIX) :], it.value()))
            it.next()
        return out

    def _count_held(self, record: bytes) -> None:
        ms = native.record_version(record)[0] >> LOGICAL_BITS
        self.held += 1
        self.earliest_ms = ms if self.earliest_ms == 0 else min(self.earliest_ms, ms)

    def due(self, latest_ms: int) -> bool:
        """Whether any held record has a wall part at or before ``latest_ms``."""
        return self.held > 0 and self.earliest_ms <= latest_ms

    def take_due(self, wb: WriteBatch, latest_ms: int) -> list[tuple[bytes, bytes]]:
        """(key, record) of every held record due by ``latest_ms``; stages their removal.

        Call ``committed`` once ``wb`` is written (the counters change then).
        """
        due = []
        for key, record in self._items():
            if native.record_version(record)[0] >> LOGICAL_BITS <= latest_ms:
                wb.delete(QUARANTINE_PREFIX + key, self._meta_handle)
                due.append((key, record))
        return due

    def stage(self, wb: WriteBatch, skewed: list[Skewed]) -> int:
        """Stage holding each skewed record (the greatest version per key); returns how many.

        Call ``committed`` once ``wb`` is written.
        """
        best: dict[bytes, Skewed] = {}
        for item in skewed:
            held = best.get(item[0])
            if held is None or held[2] < item[2]:
                best[item[0]] = item
        added = 0
        for key, record, version in best.values():
            held_raw = self._meta.get(QUARANTINE_PREFIX + key)
            if held_raw is not None and native.record_version(held_raw) >= version:
                continue
            wb.put(QUARANTINE_PREFIX + key, record, self._meta_handle)
            added += 1
        self._report(skewed)
        return added

    def committed(self, released: int, added: int) -> None:
        """The WriteBatch with ``released`` removals and ``added`` new holds is written."""
        self.released_total += released
        self.set_aside_total += added
        if released or added:
            # Rebuilt from the column family: a few records, and only when it changed.
            self.held, self.earliest_ms = 0, 0
            for _, raw in self._items():
                self._count_held(raw)

    def _report(self, skewed: list[Skewed]) -> None:
        now = time.monotonic()
        if now - self._warned_at < _LOG_EVERY_S:
            return
        self._warned_at = now
        by_origin: dict[str, int] = {}
        for _, _, (_, origin) in skewed:
            by_origin[origin] = by_origin.get(origin, 0) + 1
        furthest_ms = max(v[0] for _, _, v in skewed) >> LOGICAL_BITS
        log.warning(
            "set aside %d received records whose timestamps run too far ahead of this node's "
            "clock (by origin: %s; the furthest has wall time %d); they are applied once the "
            "clock is within replication.max_clock_skew_ms of them",
            len(skewed), ", ".join(f"{o}: {n}" for o, n in sorted(by_origin.items())), furthest_ms,
        )  # fmt: skip


async def run_quarantine_release(
    held: Quarantine, apply_many: Callable[..., int], interval_s: float
) -> None:
    """Every ``interval_s``, release the set-aside records that are due (``Engine.apply_many``)."""
    while True:
        await asyncio.sleep(interval_s)
        if not held.held:
            continue
        try:
            before = held.released_total
            changed = apply_many((), quarantine_skewed=True)
        except asyncio.CancelledError:
            raise
        except Exception:  # task boundary: retried next interval
            log.exception("releasing quarantined records failed")
            continue
        if held.released_total > before:
            log.info(
                "released %d quarantined records now in bounds (%d changed the data); %d held",
                held.released_total - before, changed, held.held,
            )  # fmt: skip
