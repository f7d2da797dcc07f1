"""Collecting dead records from one engine's data (the rule: tombstones.py).

Two ways a dead record leaves: the sweep (``Collection.collect_dead``) removes
the stored ones dead since before the horizon, and ``apply`` never stores an
incoming one (``split_winners``): if it wins over the stored version, that
version is removed instead. Either way the data and the digest index change
in one WriteBatch. Readers see no change: every removed record already read
as absent.

The node's sweep counts a record dead here since max(died, arrived here)
(tombstones.py says why; the collector passes ``arrived_before_ms``). A record
stored already dead (a received tombstone or expired record) gets its arrival
time in a side index in the ``meta`` column family, written in the apply's
WriteBatch and deleted with the record:

    ``arrived/ | key -> arrival wall ms (u64)``

A side index rather than a record field: the record format is the wire and
digest format too (every node must hash the same bytes), and arrival is a
local fact. Only records dead on arrival need an entry; for the rest, died >=
arrived. An entry left behind when a newer live version replaces the record
is harmless (its time is older than any later record's death or arrival) and
goes when the key is next collected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import cast

from rocksdict import ColumnFamily, Rdict, WriteBatch

from edgekv.storage import tombstones
from edgekv.storage.digest import Buckets, DigestIndex
from edgekv.storage.record import U64, Change

ARRIVED_PREFIX = b"arrived/"


class Collection:
    """The collection horizon of one engine, and the sweep that applies it.

    ``horizon_ms`` only grows; records dead since before it are collected, and
    ``Engine.apply`` drops incoming ones. The engine owns the data column
    family and the write lock; the sweep takes that lock one chunk at a time.
    """

    def __init__(
        self,
        data: Rdict,
        digests: DigestIndex,
        *,
        lock: threading.Lock,
        write: Callable[[WriteBatch], None],
        check_open: Callable[[], None],
        meta: tuple[Rdict, ColumnFamily],
    ) -> None:
        self._data = data
        self._meta, self._meta_handle = meta  # the engine's; dropped in ``release``
        self._digests = digests
        self._lock = lock
        self._write = write
        self._check_open = check_open
        # Read without the lock by apply (an int: a stale read only delays a drop).
        self.horizon_ms = tombstones.NEVER

    def release(self) -> None:
        """Drop the column-family handle: it keeps RocksDB (and its LOCK) open."""
        del self._meta_handle

    def collect_dead(
        self, horizon_ms: int, *, chunk: int = 256, arrived_before_ms: int | None = None
    ) -> int:
        """Remove tombstones and expired records dead since before ``horizon_ms``.

        With ``arrived_before_ms`` (the collector passes the horizon, so that
        a record counts as dead here since max(died, arrived here)), a record
        stored already dead is kept unless it also arrived before that time.
        None judges by death alone, for callers that know every record held
        here reached every peer before the horizon (tests of the gate's model).

        Returns how many were removed. Works through the data ``chunk`` records
        at a time, each chunk under the write lock (so writers wait for one
        chunk at most, and no write can race a removal) and in one WriteBatch.
        Between chunks it yields the GIL: run from a worker thread, it would
        otherwise hold the event loop off for a whole switch interval (5 ms).
        Also raises ``horizon_ms`` for ``apply``. Readers see no change: every
        removed record already read as absent.
        """
        if horizon_ms <= 0:
            return 0
        collectable = tombstones.collectable
        removed = 0
        resume: bytes | None = None
        while True:
            with self._lock:
                self._check_open()
                self.horizon_ms = max(self.horizon_ms, horizon_ms)
                it = self._data.iter()
                if resume is None:
                    it.seek_to_first()
                else:
                    it.seek(resume)
                removals: list[Change] = []
                for _ in range(chunk):
                    if not it.valid():
                        break
                    record = it.value()
                    if collectable(record, horizon_ms):
                        removals.append(Change(it.key(), record))
                    it.next()
                resume = it.key() if it.valid() else None
                del it
                if arrived_before_ms is not None:
                    removals = self._arrived_before(removals, arrived_before_ms)
                if removals:
                    wb = WriteBatch(raw_mode=True)
                    buckets: Buckets = {}
                    self.stage_removals(wb, removals, buckets)
                    self._write(wb)
                    self._digests.publish(buckets)
                    removed += len(removals)
            if resume is None:
                return removed
            time.sleep(0)  # let a waiting thread (the event loop) take the GIL

    def write_removals(self, wb: WriteBatch, removals: list[Change]) -> None:
        """Stage ``removals`` (data and digests) into ``wb``, write it, publish the digests.

        ``wb`` may carry more (the purge adds log entries). The caller holds the write lock.
        """
        buckets: Buckets = {}
        self.stage_removals(wb, removals, buckets)
        self._write(wb)
        self._digests.publish(buckets)

    def _arrived_before(self, candidates: list[Change], before_ms: int) -> list[Change]:
        """The records of ``candidates`` that arrived here before ``before_ms``."""
        if not candidates:
            return candidates
        keys: list[str | int | float | bytes | bool] = [ARRIVED_PREFIX + k for k, _ in candidates]
        arrived = cast("list[bytes | None]", self._meta.get(keys))
        return [
            change
            for change, raw in zip(candidates, arrived, strict=True)
            if raw is None or U64.unpack(raw)[0] < before_ms
        ]

    def stage_removals(self, wb: WriteBatch, removals: list[Change], buckets: Buckets) -> None:
        """Stage deleting each (key, stored record) from data and digests into ``wb``.

        Continues from the bucket digests already staged in ``buckets`` and
        updates it in place. The caller holds the write lock.
        """
        for key, _ in removals:
            wb.delete(key)
            wb.delete(ARRIVED_PREFIX + key, self._meta_handle)
        self._digests.stage_removals(wb, removals, buckets)

    def stage_arrivals(self, wb: WriteBatch, changes: list[Change], now_ms: int) -> None:
        """Stage the arrival time of each record in ``changes`` that is stored already dead."""
        dead_since = tombstones.dead_since_ms
        arrived = U64.pack(now_ms)
        for key, record in changes:
            since = dead_since(record)
            if since is not None and since < now_ms:
                wb.put(ARRIVED_PREFIX + key, arrived, self._meta_handle)


def split_winners(
    winners: Iterable[tuple[bytes, bytes]],
    stored_of: dict[bytes, bytes | None],
    horizon_ms: int,
    now_ms: int,
) -> tuple[list[Change], list[Change], list[Change]]:
    """Sort records that won LWW into (to store, stored to remove, visible to readers).

    A winner dead since before ``horizon_ms`` is not stored: it removes the
    stored version it beats (``stored_of[key]``), and readers see a change only
    if that version read as live. Every other winner is stored and visible.
    """
    changes: list[Change] = []
    removals: list[Change] = []
    visible: list[Change] = []
    collectable = tombstones.collectable
    for key, record in winners:
        if horizon_ms and collectable(record, horizon_ms):
            stored = stored_of[key]
            if stored is not None:
                removals.append(Change(key, stored))
                if tombstones.reads_live(stored, now_ms):
                    visible.append(Change(key, record))
            continue
        change = Change(key, record)
        changes.append(change)
        visible.append(change)
    return changes, removals, visible
