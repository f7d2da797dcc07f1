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

Counts are kept in memory (counted at open, then kept up to date with each
written batch) for metrics and the one-comparison "anything due?" check on
every apply. Values never reach the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rocksdict import ColumnFamily, Rdict, WriteBatch

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS

QUARANTINE_PREFIX = b"quarantine/"
_LOG_EVERY_S = 10.0  # at most one "set aside" warning per this many seconds

log = logging.getLogger(__name__)

# (key, record, version) of a received record too far ahead to apply now.
Skewed = tuple[bytes, bytes, tuple[int, str]]


@dataclass(slots=True)
class Released:
    """Held records taken out by ``take_due`` (staged, not yet written)."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    left_earliest_ms: int = 0  # the earliest of those still held after (0: none)


@dataclass(slots=True)
class SetAside:
    """Records staged by ``stage`` (not yet written)."""

    count: int = 0  # records staged
    new_keys: int = 0  # of those, keys not held before
    earliest_ms: int = 0  # smallest wall part among them (0: none)


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

    def stage_drop(self, wb: WriteBatch, refused: Callable[[bytes], bool]) -> int:
        """Stage removing every held record whose key is ``refused``; how many.

        Call ``recount`` once ``wb`` is written.
        """
        dropped = 0
        for key, _ in self._items():
            if refused(key):
                wb.delete(QUARANTINE_PREFIX + key, self._meta_handle)
                dropped += 1
        return dropped

    def recount(self) -> None:
        """Count the held records again from the column family (after ``stage_drop``)."""
        self.held = self.earliest_ms = 0
        for _, raw in self._items():
            self._count_held(raw)

    def due(self, latest_ms: int) -> bool:
        """Whether any held record has a wall part at or before ``latest_ms``."""
        return self.held > 0 and self.earliest_ms <= latest_ms

    def take_due(self, wb: WriteBatch, latest_ms: int) -> Released:
        """Every held record due by ``latest_ms``; stages their removal into ``wb``.

        Pass the result to ``committed`` once ``wb`` is written.
        """
        out = Released()
        for key, record in self._items():
            ms = native.record_version(record)[0] >> LOGICAL_BITS
            if ms <= latest_ms:
                wb.delete(QUARANTINE_PREFIX + key, self._meta_handle)
                out.records.append((key, record))
            elif out.left_earliest_ms == 0 or ms < out.left_earliest_ms:
                out.left_earliest_ms = ms
        return out

    def stage(
        self, wb: WriteBatch, skewed: list[Skewed], releasing: Released | None = None
    ) -> SetAside:
        """Stage holding each skewed record (the greatest version per key) into ``wb``.

        ``releasing`` is what ``take_due`` staged into the same ``wb``: those
        keys count as no longer held. Pass the result to ``committed`` once
        ``wb`` is written.
        """
        gone = {key for key, _ in releasing.records} if releasing is not None else set()
        best: dict[bytes, Skewed] = {}
        for item in skewed:
            held = best.get(item[0])
            if held is None or held[2] < item[2]:
                best[item[0]] = item
        out = SetAside()
        for key, record, version in best.values():
            held_raw = None if key in gone else self._meta.get(QUARANTINE_PREFIX + key)
            if held_raw is not None and native.record_version(held_raw) >= version:
                continue
            wb.put(QUARANTINE_PREFIX + key, record, self._meta_handle)
            out.count += 1
            out.new_keys += held_raw is None
            ms = version[0] >> LOGICAL_BITS
            out.earliest_ms = ms if out.earliest_ms == 0 else min(out.earliest_ms, ms)
        self._report(skewed)
        return out

    def committed(self, released: Released | None, added: SetAside | None) -> None:
        """The WriteBatch staged with ``take_due`` and ``stage`` is written."""
        if released is not None:
            self.released_total += len(released.records)
            self.held -= len(released.records)
            self.earliest_ms = released.left_earliest_ms
        if added is not None:
            self.set_aside_total += added.count
            self.held += added.new_keys
            if added.earliest_ms and (
                self.earliest_ms == 0 or added.earliest_ms < self.earliest_ms
            ):
                self.earliest_ms = added.earliest_ms

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
    quarantine: Callable[[], Quarantine], apply_many: Callable[..., int], interval_s: float
) -> None:
    """Every ``interval_s``, release the set-aside records that are due (``Engine.apply_many``).

    ``quarantine()`` is the engine's current one (``Engine.reopen`` builds a new one).
    """
    while True:
        await asyncio.sleep(interval_s)
        held = quarantine()
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
