"""Erasing what a node may no longer hold, after its placement rules changed.

A rule change can leave keys in a node's data, replication log and digest index
that its region may no longer hold. ``Purge`` finds them (by key range:
``PlacementRules.refused_ranges``), removes a confirmed chunk of them from all
three column families in one WriteBatch, and then compacts every column family
and flushes the WAL, so that no byte of a removed value stays in any SST or WAL
file of the data directory. Which records are safe to remove is the caller's
decision (replication/handoff.py: the owners confirmed they hold them, or the
operator said so).

Removals are local and silent: nothing is logged for replication, no listener
hears of them (they are not deletes, and the owners keep the keys). Readers
never saw these keys anyway: the request layer forwards every key this node may
not hold.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence

from rocksdict import BottommostLevelCompaction, CompactOptions, Rdict, WriteBatch

from edgekv import native
from edgekv.storage.collection import Collection
from edgekv.storage.feed import ChangeLog, decode_entry
from edgekv.storage.quarantine import Quarantine
from edgekv.storage.record import Change
from edgekv.storage.replog import ReplicationLog

KeyRanges = Sequence[tuple[bytes, bytes]]  # sorted, disjoint [lo, hi); hi b"" = unbounded

_LOG_PAGE = 4096


def in_ranges(key: bytes, ranges: KeyRanges) -> bool:
    """Whether ``key`` falls in one of ``ranges`` (sorted and disjoint)."""
    i = bisect.bisect_right(ranges, key, key=lambda r: r[0]) - 1
    if i < 0:
        return False
    lo, hi = ranges[i]
    return lo <= key and (not hi or key < hi)


class Purge:
    """Find and remove the records of refused key ranges; compact them away.

    The engine owns the column families (data, log, digest index, meta) and the
    write lock; ``remove`` takes the lock one chunk at a time, the reads take
    none. May run on a worker thread.
    """

    def __init__(
        self,
        column_families: tuple[Rdict, Rdict, Rdict, Rdict],
        replog: ReplicationLog,
        collection: Collection,
        quarantine: Quarantine,
        lock: threading.Lock,
        feed: ChangeLog,
    ) -> None:
        self._data, self._log, self._index, self._meta = column_families
        self._feed = feed
        self._replog = replog
        self._collection = collection
        self._quarantine = quarantine
        self._lock = lock

    # -- finding -------------------------------------------------------------------

    def records_in(
        self, refused: KeyRanges, *, start: bytes = b"", limit: int = 256, max_bytes: int = 1 << 20
    ) -> tuple[list[Change], bytes | None]:
        """Stored (key, record) pairs in ``refused`` from ``start``, and where to resume.

        At most ``limit`` records and about ``max_bytes`` of them (at least one);
        the resume key is None when nothing is left. Tombstones included.
        """
        found: list[Change] = []
        size = 0
        for lo, hi in refused:
            if hi and hi <= start:
                continue
            it = self._data.iter()
            it.seek(max(lo, start))
            while it.valid():
                key = it.key()
                if hi and key >= hi:
                    break
                if len(found) >= limit or (found and size >= max_bytes):
                    return found, key
                record = it.value()
                found.append(Change(key, record))
                size += len(key) + len(record)
                it.next()
        return found, None

    def log_entries_in(self, refused: KeyRanges) -> dict[bytes, list[int]]:
        """key -> seqs of every log entry whose key falls in ``refused``."""
        out: dict[bytes, list[int]] = {}
        seq = 0
        while True:
            entries = self._replog.read(seq, _LOG_PAGE)
            for entry in entries:
                if in_ranges(entry.key, refused):
                    out.setdefault(entry.key, []).append(entry.seq)
            if len(entries) < _LOG_PAGE:
                return out
            seq = entries[-1].seq + 1
            time.sleep(0)  # let a waiting thread (the event loop) take the GIL

    def pending(self, refused: KeyRanges) -> bool:
        """Whether any data record, log or feed entry of ``refused`` is still here."""
        if self.records_in(refused, limit=1)[0] or self.log_entries_in(refused):
            return True
        it = self._feed.column_family.iter()
        it.seek_to_first()
        while it.valid():
            if in_ranges(decode_entry(0, it.value()).key, refused):
                return True
            it.next()
        return False

    def drop_feed_entries(self, refused: KeyRanges) -> int:
        """Remove the change-feed entries of ``refused`` keys (storage/feed.py); how many.

        The feed is a copy of changes that became visible, kept for Watch:
        dropping an entry loses no data (the records go only once confirmed,
        in ``remove``), and a Watch never serves a key its node may not hold.
        """
        return self._feed.drop(lambda key: in_ranges(key, refused))

    # -- removing ------------------------------------------------------------------

    def remove(
        self, confirmed: Sequence[Change], log_seqs: MutableMapping[bytes, list[int]]
    ) -> int:
        """Remove each confirmed (key, record) from data, digests and log, in one WriteBatch.

        A key is removed only if its stored version is still the confirmed
        one or older (a newer one would need its own confirmation). Its log
        entries go in the same batch and are taken out of ``log_seqs`` (from
        ``log_entries_in``). Returns how many data records were removed.
        """
        version = native.record_version
        with self._lock:
            removals: list[Change] = []
            seqs: list[int] = []
            for key, record in confirmed:
                stored = self._data.get(key)
                if stored is not None:
                    if version(stored) > version(record):
                        continue
                    removals.append(Change(key, stored))
                seqs += log_seqs.pop(key, ())
            if not removals and not seqs:
                return 0
            wb = WriteBatch(raw_mode=True)
            self._replog.stage_removals(wb, seqs)
            self._collection.write_removals(wb, removals)
            return len(removals)

    def drop_quarantined(self, refused: KeyRanges) -> int:
        """Drop the set-aside (quarantined) records of ``refused`` keys; how many.

        They were never applied here, and their sender keeps its own copy; once
        this node may not hold a key, it must not apply it when the clock
        catches up either, nor keep its bytes in the meta column family.
        """
        with self._lock:
            wb = WriteBatch(raw_mode=True)
            dropped = self._quarantine.stage_drop(wb, lambda key: in_ranges(key, refused))
            if dropped:
                self._collection.write_removals(wb, [])
                self._quarantine.recount()
            return dropped

    def remove_orphan_log_entries(self, log_seqs: Mapping[bytes, Sequence[int]]) -> int:
        """Remove the log entries of keys that have no data record left; how many.

        Their data was removed (or collected, every peer having acknowledged
        it), so their log entries hold nothing an owner lacks.
        """
        with self._lock:
            seqs = [
                seq for key, key_seqs in log_seqs.items() if self._data.get(key) is None
                for seq in key_seqs
            ]  # fmt: skip
            if seqs:
                wb = WriteBatch(raw_mode=True)
                self._replog.stage_removals(wb, seqs)
                self._collection.write_removals(wb, [])
            return len(seqs)

    def compact(self) -> None:
        """Rewrite every column family without the removed records, and retire old WALs.

        A forced bottommost compaction drops the deleted records and their
        tombstones from every SST file; flushing the meta column family too lets
        RocksDB delete the WAL files that still held the removed values.
        Slow (rewrites all data): run it on a worker thread.
        """
        opts = CompactOptions()
        opts.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        families = (self._data, self._log, self._index, self._meta, self._feed.column_family)
        for cf in families:
            cf.compact_range(None, None, opts)
        for cf in families:
            cf.flush()
