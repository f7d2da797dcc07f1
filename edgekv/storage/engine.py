"""The storage engine of one PoP: RocksDB (through rocksdict), written one WriteBatch at a time.

One RocksDB per node (database.py): data in the default column family, the replication log
(replog.py), the digest index (digest.py) and meta. The engine owns them and the write lock. Every
local write and every apply is one WriteBatch (data, log, digests, seq, clock) that its helpers
stage into; their own upkeep (trims, rebuilds, sweeps, purges) writes under the same lock.

Concurrency: reads may run on any thread. Writes are serialised by one lock (seq and clock order
must match log order); a node's event loop calls them inline because each is a few microseconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rocksdict import Rdict, WriteBatch, WriteOptions

from edgekv import native
from edgekv.errors import EdgeKVError, FailedPrecondition, InvalidArgument, StorageError
from edgekv.keyrange import prefix_end
from edgekv.limits import DEFAULT_LIMITS, Limits
from edgekv.storage.batch import DeleteOp, PutOp, StagedOp, conditions_of, validate
from edgekv.storage.clock import DEFAULT_MAX_SKEW_MS, HybridClock, wall_ms
from edgekv.storage.collection import Collection, split_winners
from edgekv.storage.conditions import Condition, check_conditions
from edgekv.storage.database import META_CF, claim, open_rocksdb
from edgekv.storage.digest import DIGEST_CF, DigestIndex
from edgekv.storage.feed import ChangeLog
from edgekv.storage.purge import Purge
from edgekv.storage.quarantine import Quarantine
from edgekv.storage.received import sort_received
from edgekv.storage.record import U64, Change, Item, ScanItem, ScanPage, Version
from edgekv.storage.recovery import StorageState, close_all, open_released
from edgekv.storage.replog import LOG_CF, LogAccess, ReplicationLog

_META_HLC = b"hlc"

# A scan page reads at most this many records per item asked for (plus a floor),
# so a long run of tombstones costs a short page, not an unbounded one.
_SCAN_EXAMINE_FACTOR = 8
_SCAN_EXAMINE_FLOOR = 1024
_PENDING = EdgeKVError("pending")  # write_group placeholder for a batch not yet committed


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine opens RocksDB. ``sync_writes`` fsyncs the WAL per write."""

    limits: Limits = DEFAULT_LIMITS
    sync_writes: bool = False
    block_cache_mb: int = 64
    max_clock_skew_ms: int = DEFAULT_MAX_SKEW_MS
    # Maps a key to its placement (the matching rule's prefix; b"" = global).
    # Digests are kept per placement so two nodes compare only what both may hold.
    placement_of: Callable[[bytes], bytes] | None = None
    # Changes whenever the placement rules change; the digest index is rebuilt then.
    placement_fingerprint: bytes = b""


ChangeListener = Callable[[list[Change], int, bool], None]
Conditioned = Sequence[tuple[bytes, Condition]]


class Engine(LogAccess):
    """One node's RocksDB: data, replication log, digest index and metadata.

    Guarantees: every local write (``put``, ``delete``, ``write``) is one atomic
    WriteBatch that updates the data, appends to the log under the next seq,
    updates the digests, and advances the persisted seq and clock; it returns
    only after RocksDB accepted it (in the WAL; fsynced when ``sync_writes``).
    Invalid input raises InvalidArgument before anything is written. Reopening
    restores the seq and the clock high-water mark, so no seq or timestamp is
    ever reused.

    Parts with their own modules, sharing the engine's write lock: ``digests``
    (DigestIndex: anti-entropy queries), ``collection`` (Collection: dead-record
    sweep and horizon), and the replication log, reached through ``read_log``,
    ``first_log_seq``, ``trim_log``, ``last_seq`` and the peer cursors.
    """

    def __init__(
        self, path: str | os.PathLike[str], node_id: str, settings: EngineSettings | None = None
    ):
        self.settings = settings or EngineSettings()
        self.limits = self.settings.limits
        self.path = Path(path)
        self.node_id = node_id
        if not isinstance(node_id, str) or not node_id.isascii():
            raise InvalidArgument(f"node id {node_id!r} must be an ASCII string")
        self._origin = node_id.encode("ascii")
        if not 1 <= len(self._origin) <= 255:
            raise InvalidArgument(f"node id is {len(self._origin)} bytes; it must be 1 to 255")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the seq, the clock, the trees, write order
        # The change feed publishes its head first (self.feed: a reopen builds a new one).
        self._listeners: list[ChangeListener] = [lambda *a: self.feed.committed(*a)]
        self._closed = False
        self.storage = StorageState(self.path, node_id)  # writes refused while degraded
        self._open(None, None)

    def _open(self, clock: HybridClock | None, reader: native.Reader | None) -> None:
        """Open RocksDB and build the parts on it (``__init__``; ``reopen`` keeps the
        clock, ahead of anything persisted, and the reader, rebound)."""
        node_id = self.node_id
        self._db = open_rocksdb(self.path, self.settings.block_cache_mb)
        # Column families and handles: lent to the parts below, dropped in _release.
        self._log = self._db.get_column_family(LOG_CF)
        self._log_handle = self._db.get_column_family_handle(LOG_CF)
        self._meta = self._db.get_column_family(META_CF)
        self._meta_handle = self._db.get_column_family_handle(META_CF)
        self._digest = self._db.get_column_family(DIGEST_CF)
        self._digest_handle = self._db.get_column_family_handle(DIGEST_CF)
        self._write_opts = WriteOptions()
        self._write_opts.sync = self.settings.sync_writes
        try:
            claim_batch = claim(self._meta, self._meta_handle, self.path, node_id)
        except FailedPrecondition:
            self._release()
            raise
        if claim_batch is not None:
            self._db.write(claim_batch, self._write_opts)
        raw_hlc = self._meta.get(_META_HLC)
        self.clock = clock or HybridClock(
            0 if raw_hlc is None else int(U64.unpack(raw_hlc)[0]),
            max_skew_ms=self.settings.max_clock_skew_ms,
        )
        meta = (self._meta, self._meta_handle)
        self._replog = ReplicationLog(
            (self._log, self._log_handle), meta, lock=self._lock, check_open=self._check_open
        )
        self.digests = DigestIndex(
            self._db,
            (self._digest, self._digest_handle),
            meta,
            lock=self._lock,
            write=self._write_batch,
            check_open=self._check_open,
            placement_of=self.settings.placement_of,
            fingerprint=self.settings.placement_fingerprint,
        )
        self.collection = Collection(
            self._db,
            self.digests,
            lock=self._lock,
            write=self._write_batch,
            check_open=self._check_open,
            meta=meta,
        )
        self.quarantine = Quarantine(meta)  # received records too far ahead, set aside
        self.feed = ChangeLog(self._db, meta, self._lock, self._write_batch, wall_ms)
        cfs = (self._db, self._log, self._digest, self._meta)  # purge.py: erase, compact
        parts = (self._replog, self.collection, self.quarantine)
        self.purge = Purge(cfs, *parts, self._lock, self.feed)
        self.digests.load()
        if reader is not None:
            reader.rebind(self._db.get)
        self._reader = reader or native.Reader(self._db.get)
        # The read hot path: bound straight to the compiled Reader, no Python frame.
        self.get = self._reader.get

    # -- reads ---------------------------------------------------------------

    # ``get`` is bound per instance in __init__ to native.Reader.get:
    #     get(key: bytes, now_ms: int = -1) -> (value, timestamp, origin, expires_at_ms) | None

    def get_item(self, key: bytes) -> Item | None:
        """``get`` as a typed Item (a little slower: for callers off the hot path)."""
        return None if (found := self._reader.get(key)) is None else Item(*found)

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[bytes, int, str, int] | None]:
        """``get`` for each key, in order, with one RocksDB multi-get."""
        if len(keys) > self.limits.max_batch_ops:
            raise InvalidArgument(
                f"batch get has {len(keys)} keys; the limit is {self.limits.max_batch_ops} "
                f"(max_batch_ops)"
            )
        return self._reader.get_many(list(keys))

    def get_record(self, key: bytes) -> bytes | None:
        """The raw stored record, tombstones and expired records included."""
        raw = self._db.get(key)
        return raw if raw is None or isinstance(raw, bytes) else bytes(raw)

    def scan(
        self,
        start: bytes = b"",
        end: bytes = b"",
        *,
        limit: int = 100,
        now_ms: int = -1,
    ) -> ScanPage:
        """Live items with ``start <= key < end`` in key order (``end`` b"" = unbounded).

        Resume with ``scan(page.next_start, end, ...)`` until ``next_start`` is None.
        """
        if not isinstance(start, bytes) or not isinstance(end, bytes):
            raise InvalidArgument("scan start and end must be bytes")
        if end and start >= end:
            raise InvalidArgument(f"scan range is empty: start {start!r} >= end {end!r}")
        if limit < 1 or limit > self.limits.max_scan_limit:
            raise InvalidArgument(
                f"scan limit is {limit}; it must be 1 to {self.limits.max_scan_limit} "
                f"(max_scan_limit)"
            )
        max_examined = limit * _SCAN_EXAMINE_FACTOR + _SCAN_EXAMINE_FLOOR
        items, last = self._reader.scan(self._db.iter(), start, end, limit, max_examined, now_ms)
        next_start = None if last is None else last + b"\x00"  # the successor of ``last``
        return ScanPage([ScanItem(*item) for item in items], next_start)

    def scan_prefix(self, prefix: bytes, *, limit: int = 100, start: bytes = b"") -> ScanPage:
        """``scan`` of every key that starts with ``prefix``, resuming at ``start``."""
        return self.scan(max(prefix, start), prefix_end(prefix), limit=limit)

    def column_families(self) -> tuple[Rdict, Rdict, Rdict]:
        """(data, log, digest index) for read-only walks such as the residency audit."""
        self._check_open()
        return self._db, self._log, self._digest

    def meta_family(self) -> Rdict:
        """The meta column family: it holds user keys too (quarantine/, arrived/)."""
        return self._meta

    def property_int(self, name: str) -> int:
        """A RocksDB integer property of the data column family (0 if unknown)."""
        return int(self._db.property_int_value(name) or 0)

    # -- local writes --------------------------------------------------------

    def put(self, key: bytes, value: bytes, ttl_ms: int = 0) -> Version:
        """Store ``value`` under ``key`` (expiring after ``ttl_ms`` if > 0)."""
        return self.write((PutOp(key, value, ttl_ms),))

    def delete(self, key: bytes) -> Version:
        """Write a tombstone for ``key``; it replicates and wins or loses like a put."""
        return self.write((DeleteOp(key),))

    def write(self, ops: Sequence[PutOp | DeleteOp]) -> Version:
        """Apply puts and deletes atomically, all under one new version.

        A key may appear once per batch (two writes with one version would replicate
        ambiguously). Validation (batch.py) happens before anything is written; the
        ops' conditions are checked under the write lock (a ConditionFailed writes nothing).
        """
        staged = validate(ops, wall_ms(), self.limits, conditional=True)
        return self._commit([staged], conditions_of(ops))[0]

    def write_group(
        self, batches: Sequence[Sequence[PutOp | DeleteOp]]
    ) -> list[Version | EdgeKVError]:
        """Group commit: several independent ``write`` batches in one RocksDB write.

        Each batch keeps its own version and atomicity; an invalid batch fails
        alone (its slot holds the error) and the others commit. With
        ``sync_writes`` the whole group shares one fsync.
        """
        now = wall_ms()
        results: list[Version | EdgeKVError] = []
        staged: list[list[StagedOp]] = []
        for ops in batches:
            try:
                staged.append(validate(ops, now, self.limits))
                results.append(_PENDING)
            except EdgeKVError as exc:
                results.append(exc)
        versions = iter(self._commit(staged) if staged else ())
        return [next(versions) if r is _PENDING else r for r in results]

    def _commit(self, groups: list[list[StagedOp]], conditioned: Conditioned = ()) -> list[Version]:
        """Write validated batches in one WriteBatch; each gets its own timestamp."""
        encode = native.encode_record
        origin = self._origin
        versions: list[Version] = []
        changes: list[Change] = []
        with self._lock:
            self._check_open()
            if conditioned:  # one batch (``write``): checked against what it replaces
                check_conditions(conditioned, self.get_record)
            wb = WriteBatch(raw_mode=True)
            timestamp = 0
            for staged in groups:
                timestamp = self.clock.now()
                for key, tombstone, expires_at_ms, value in staged:
                    record = encode(tombstone, timestamp, expires_at_ms, origin, value)
                    wb.put(key, record)
                    changes.append(Change(key, record))
                versions.append(Version(timestamp, self.node_id))
            seq = self._replog.stage(wb, changes)
            self.feed.stage(wb, changes)
            buckets = self.digests.stage(wb, changes)
            wb.put(_META_HLC, U64.pack(timestamp), self._meta_handle)
            self._write_batch(wb)
            self._replog.committed(seq)
            self.digests.publish(buckets)
            self._notify(changes, seq, True)
        return versions

    def _notify(self, changes: list[Change], last_seq: int, local: bool) -> None:
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes, last_seq, local)
            except Exception:  # a consumer's bug must not fail a committed write
                logging.getLogger(__name__).exception("change listener failed")

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(changes, last_seq, local)`` after every write or apply that changed data.

        Called under the write lock, possibly from a worker thread (group
        commit): it must be quick and thread-safe (e.g. hand off to a loop with
        ``call_soon_threadsafe``). ``last_seq`` is the log's newest seq.
        """
        self._listeners.append(listener)

    def _write_batch(self, wb: WriteBatch) -> None:
        self.storage.check_writable()  # recovery.py: refused while degraded
        try:
            self._db.write(wb, self._write_opts)
        except Exception as exc:
            raise self.storage.write_failed(exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"engine at {self.path} is closed")

    # -- remote writes -------------------------------------------------------

    def apply(self, key: bytes, record: bytes) -> bool:
        """Apply a record that another node wrote; True if it changed this node's data.

        Deterministic and idempotent: the record is stored only if its version (timestamp, origin)
        is greater than the stored one's, so applying the same records in any order, any number of
        times, leaves every node with the same value — the one with the greatest version. Advances
        the clock past the record's timestamp; refuses (ClockSkewError) a timestamp too far ahead.
        Applied records are not appended to this node's log: only their origin ships them.
        """
        return self.apply_many(((key, record),)) == 1

    def apply_many(
        self, entries: Iterable[tuple[bytes, bytes]], *, quarantine_skewed: bool = False
    ) -> int:
        """``apply`` for each (key, record) in one WriteBatch; returns how many changed.

        Same contract as ``apply``; within one call, the greatest version per key
        wins too. Validates every record first; on any error nothing is written.
        A winner dead since before the collection horizon is not stored: it
        removes the version it beats (collection.py). With ``quarantine_skewed``
        (the peer plane) a record too far ahead of the clock is set aside
        (quarantine.py) rather than refusing the batch; due ones are released
        first (``apply_many(())`` only releases them).
        """
        clock, held = self.clock, self.quarantine
        with self._lock:
            self._check_open()
            wb = WriteBatch(raw_mode=True)
            now = wall_ms()
            due_ms = now + clock.max_skew_ms
            released = held.take_due(wb, due_ms) if held.due(due_ms) else None
            got = sort_received(
                itertools.chain(released.records if released else (), entries),
                check_key=self.limits.check_key,
                get_stored=self._db.get,
                skew_limit=clock.skew_limit() if quarantine_skewed else 0,
            )
            if got.max_ts:
                clock.observe(got.max_ts)  # may refuse the whole batch: nothing written yet
            added = held.stage(wb, got.skewed, released) if got.skewed else None
            horizon = self.collection.horizon_ms
            changes, removals, visible = split_winners(got.pairs(), got.stored_of, horizon, now)
            for key, record in changes:
                wb.put(key, record)
            buckets = self.digests.stage(wb, changes)
            self.feed.stage(wb, visible)
            if changes or removals:
                self.collection.stage_removals(wb, removals, buckets)
                self.collection.stage_arrivals(wb, changes, now)
                wb.put(_META_HLC, U64.pack(clock.last), self._meta_handle)
            if wb.is_empty():
                return 0
            self._write_batch(wb)
            held.committed(released, added)
            self.digests.publish(buckets)
            self._notify(visible, self._replog.last_seq, False)
            return len(changes) + len(removals)

    def records(self, keys: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(key, stored record) for each key that has one, tombstones included."""
        if not keys:
            return []
        raws = cast("list[bytes | None]", self._db.get(list(keys)))
        return [(k, r) for k, r in zip(keys, raws, strict=True) if r is not None]

    # -- lifecycle -----------------------------------------------------------

    def flush(self) -> None:
        """Persist memtables and the WAL (used before backups and at shutdown)."""
        with self._lock:
            self._check_open()
            self._db.flush_wal(True)

    def close(self) -> None:
        """Flush the WAL and close RocksDB. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.storage.degraded:  # its flushes fail; its WAL has every ack'd write
                    self._db.flush_wal(True)
                    self._db.flush()
            finally:
                self._release()

    def reopen(self) -> None:
        """Close RocksDB and open it again in place: the way out of a write error that
        RocksDB keeps until reopened (recovery.py). Keeps the clock, the listeners and
        the read path; the open replays the WAL, so nothing acknowledged is lost. If it
        fails, reads fail too until a reopen succeeds."""
        with self._lock:
            self._check_open()
            horizon_ms = self.collection.horizon_ms
            self._release()
            open_released(lambda: self._open(self.clock, self._reader))
            self.collection.horizon_ms = horizon_ms
            self.storage.reopened()

    def _release(self) -> None:
        # Every column family and handle, the parts' too, keeps RocksDB (and LOCK) open:
        # each is dropped even when another fails (after a failed write, every flush does).
        parts = ("_replog", "digests", "quarantine", "collection", "feed")
        close_all(getattr(self, p).release for p in parts if p in self.__dict__)
        for name in ("_log_handle", "_meta_handle", "_digest_handle"):
            self.__dict__.pop(name, None)
        close_all((self._log.close, self._meta.close, self._digest.close, self._db.close))

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
