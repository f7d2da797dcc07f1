"""The storage engine of one PoP: RocksDB (through rocksdict) plus the replication log.

One RocksDB database per node, three column families:

* ``default`` — the data: user key -> record (storage/record.py).
* ``log``     — the replication log: 8-byte big-endian seq -> u16 key length,
  key, record. Every local write appends here in the same WriteBatch that
  changes the data, so the log is exactly the sequence of local writes.
* ``meta``    — engine state: the last seq, the clock's high-water mark, the
  node id that owns the directory, replication cursors, anti-entropy bucket
  digests. Updated in the write batch that changes the data, so a crash can
  never leave them behind the data.
* ``digest``  — the anti-entropy index (storage/digest.py): every key's
  version by placement group and bucket.

Concurrency: reads may run on any thread. Writes are serialised by one lock
(seq and clock order must match log order); a node's event loop calls them
inline because each is a few microseconds.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from edgekv import native
from edgekv.errors import EdgeKVError, FailedPrecondition, InvalidArgument, StorageError
from edgekv.keyrange import prefix_end
from edgekv.limits import DEFAULT_LIMITS, Limits
from edgekv.storage import digest, tombstones
from edgekv.storage.clock import DEFAULT_MAX_SKEW_MS, HybridClock, wall_ms
from edgekv.storage.record import Item, Version

LOG_CF = "log"
META_CF = "meta"
DIGEST_CF = "digest"
_META_SEQ = b"seq"
_META_HLC = b"hlc"
_META_NODE_ID = b"node_id"
_META_FORMAT = b"engine_format"
_META_PLACEMENT = b"placement_fingerprint"
_META_CURSOR = b"cursor/"
ENGINE_FORMAT = b"1"

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000  # ten years: beyond that it is a bug, not a TTL

# A scan page reads at most this many records per item asked for (plus a floor),
# so a long run of tombstones costs a short page, not an unbounded one.
_SCAN_EXAMINE_FACTOR = 8
_SCAN_EXAMINE_FLOOR = 1024
_PENDING = EdgeKVError("pending")  # write_group placeholder for a batch not yet committed


class PutOp(NamedTuple):
    """One put in a ``write`` batch. ``ttl_ms`` 0 means no expiry."""

    key: bytes
    value: bytes
    ttl_ms: int = 0


class DeleteOp(NamedTuple):
    """One delete in a ``write`` batch: it writes a tombstone."""

    key: bytes


class LogEntry(NamedTuple):
    """One replication-log entry: the local write with sequence number ``seq``."""

    seq: int
    key: bytes
    record: bytes


class ScanItem(NamedTuple):
    key: bytes
    value: bytes
    timestamp: int
    origin: str
    expires_at_ms: int

    @property
    def version(self) -> Version:
        return Version(self.timestamp, self.origin)


class ScanPage(NamedTuple):
    """A page of a scan; ``next_start`` resumes it (None when the range is done)."""

    items: list[ScanItem]
    next_start: bytes | None


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine opens RocksDB. ``sync_writes`` fsyncs the WAL per write."""

    limits: Limits = DEFAULT_LIMITS
    sync_writes: bool = False
    block_cache_mb: int = 64
    max_clock_skew_ms: int = DEFAULT_MAX_SKEW_MS
    # Maps a key to its placement group (the matching rule's prefix; b"" = global).
    # Digests are kept per group so two nodes compare only what both may hold.
    placement_of: Callable[[bytes], bytes] | None = None
    # Changes whenever the placement rules change; the digest index is rebuilt then.
    placement_fingerprint: bytes = b""


class Change(NamedTuple):
    """A record that became this node's version of ``key`` (local write or apply)."""

    key: bytes
    record: bytes


ChangeListener = Callable[[list[Change], int, bool], None]


def _global_placement(key: bytes) -> bytes:
    return b""


def _encode_log_value(key: bytes, record: bytes) -> bytes:
    return _U16.pack(len(key)) + key + record


def _decode_log_value(raw: bytes) -> tuple[bytes, bytes]:
    (n,) = _U16.unpack_from(raw)
    return raw[2 : 2 + n], raw[2 + n :]


class Engine:
    """One node's RocksDB: data, replication log and metadata.

    Guarantees: every local write (``put``, ``delete``, ``write``) is one atomic
    WriteBatch that updates the data, appends to the log under the next seq,
    and advances the persisted seq and clock; it returns only after RocksDB
    accepted it (in the WAL; fsynced when ``sync_writes``). Invalid input raises
    InvalidArgument before anything is written. Reopening restores the seq and
    the clock high-water mark, so no seq or timestamp is ever reused.
    """

    def __init__(
        self, path: str | os.PathLike[str], node_id: str, options: EngineOptions | None = None
    ):
        self.options = options or EngineOptions()
        self.limits = self.options.limits
        self.path = Path(path)
        self.node_id = node_id
        if not isinstance(node_id, str) or not node_id.isascii():
            raise InvalidArgument(f"node id {node_id!r} must be an ASCII string")
        self._origin = node_id.encode("ascii")
        if not 1 <= len(self._origin) <= 255:
            raise InvalidArgument(f"node id is {len(self._origin)} bytes; it must be 1 to 255")
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = self._open_rocksdb()
        self._log = self._db.get_column_family(LOG_CF)
        self._log_handle = self._db.get_column_family_handle(LOG_CF)
        self._meta = self._db.get_column_family(META_CF)
        self._meta_handle = self._db.get_column_family_handle(META_CF)
        self._digest = self._db.get_column_family(DIGEST_CF)
        self._digest_handle = self._db.get_column_family_handle(DIGEST_CF)
        self._placement_of = self.options.placement_of or _global_placement
        self._write_opts = WriteOptions()
        self._write_opts.sync = self.options.sync_writes
        self._check_owner()
        self._lock = threading.Lock()  # guards _seq, the clock, and write ordering
        self._seq = self._read_u64_meta(_META_SEQ)
        self.clock = HybridClock(
            self._read_u64_meta(_META_HLC), max_skew_ms=self.options.max_clock_skew_ms
        )
        self._trees: dict[bytes, digest.DigestTree] = {}  # guarded by _lock
        # Records dead since before this are collected, and dropped on apply.
        self.gc_horizon_ms = tombstones.NEVER
        self._listeners: list[ChangeListener] = []
        self._closed = False
        self._load_digests()
        self._reader = native.Reader(self._db.get)
        # The read hot path: bound straight to the compiled Reader, no Python frame.
        self.get = self._reader.get

    # -- opening -------------------------------------------------------------

    def _open_rocksdb(self) -> Rdict:
        def cf_options() -> Options:
            opts = Options(raw_mode=True)
            table = BlockBasedOptions()
            table.set_bloom_filter(10, False)
            table.set_block_cache(Cache(self.options.block_cache_mb * 1024 * 1024))
            table.set_cache_index_and_filter_blocks(True)
            opts.set_block_based_table_factory(table)
            return opts

        opts = cf_options()
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_max_background_jobs(2)
        try:
            return Rdict(
                str(self.path),
                opts,
                column_families={
                    LOG_CF: Options(raw_mode=True),
                    META_CF: Options(raw_mode=True),
                    DIGEST_CF: Options(raw_mode=True),
                },
            )
        except Exception as exc:  # rocksdict raises plain Exception for I/O and lock errors
            raise StorageError(f"cannot open RocksDB at {self.path}: {exc}") from exc

    def _check_owner(self) -> None:
        owner = self._meta.get(_META_NODE_ID)
        if owner is None:
            wb = WriteBatch(raw_mode=True)
            wb.put(_META_NODE_ID, self._origin, self._meta_handle)
            wb.put(_META_FORMAT, ENGINE_FORMAT, self._meta_handle)
            self._db.write(wb, self._write_opts)
        elif owner != self._origin:
            self._release()
            raise FailedPrecondition(
                f"data directory {self.path} belongs to node {owner.decode(errors='replace')!r}, "
                f"not {self.node_id!r}; point data_dir at the right node's directory"
            )
        fmt = self._meta.get(_META_FORMAT)
        if fmt not in (None, ENGINE_FORMAT):
            self._release()
            raise FailedPrecondition(
                f"data directory {self.path} has engine format {fmt!r}; this build reads "
                f"{ENGINE_FORMAT!r}"
            )

    def _read_u64_meta(self, key: bytes) -> int:
        raw = self._meta.get(key)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    # -- reads ---------------------------------------------------------------

    # ``get`` is bound per instance in __init__ to native.Reader.get:
    #     get(key: bytes, now_ms: int = -1) -> (value, timestamp, origin, expires_at_ms) | None

    def get_item(self, key: bytes) -> Item | None:
        """``get`` as a typed Item (a little slower: for callers off the hot path)."""
        found = self._reader.get(key)
        return None if found is None else Item(*found)

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

    def property_int(self, name: str) -> int:
        """A RocksDB integer property of the data column family (0 if unknown)."""
        return int(self._db.property_int_value(name) or 0)

    def approximate_key_count(self) -> int:
        """RocksDB's estimate of the number of records (tombstones included)."""
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    # -- local writes --------------------------------------------------------

    def put(self, key: bytes, value: bytes, ttl_ms: int = 0) -> Version:
        """Store ``value`` under ``key`` (expiring after ``ttl_ms`` if > 0)."""
        return self.write((PutOp(key, value, ttl_ms),))

    def delete(self, key: bytes) -> Version:
        """Write a tombstone for ``key``; it replicates and wins or loses like a put."""
        return self.write((DeleteOp(key),))

    def write(self, ops: Sequence[PutOp | DeleteOp]) -> Version:
        """Apply puts and deletes atomically, all under one new version.

        A key may appear once per batch (two writes with one version would
        replicate ambiguously). Validation happens before anything is written.
        """
        return self._commit([self._stage(ops, wall_ms())])[0]

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
        staged: list[list[tuple[bytes, bool, int, bytes]]] = []
        for ops in batches:
            try:
                staged.append(self._stage(ops, now))
                results.append(_PENDING)
            except EdgeKVError as exc:
                results.append(exc)
        versions = iter(self._commit(staged) if staged else ())
        return [next(versions) if r is _PENDING else r for r in results]

    def _stage(
        self, ops: Sequence[PutOp | DeleteOp], now: int
    ) -> list[tuple[bytes, bool, int, bytes]]:
        """Validate a batch; return (key, tombstone, expires_at_ms, value) per op."""
        self.limits.check_batch(len(ops))
        staged: list[tuple[bytes, bool, int, bytes]] = []
        seen: set[bytes] = set()
        for i, op in enumerate(ops):
            if not isinstance(op, PutOp | DeleteOp):
                raise InvalidArgument(
                    f"ops[{i}] is {type(op).__name__}; expected PutOp or DeleteOp"
                )
            key = op.key
            self.limits.check_key(key)
            if key in seen:
                raise InvalidArgument(f"ops[{i}]: key {key[:64]!r} appears twice in one batch")
            seen.add(key)
            if isinstance(op, PutOp):
                self.limits.check_value(op.value)
                staged.append((key, False, self._expiry(op.ttl_ms, now, i), op.value))
            else:
                staged.append((key, True, 0, b""))
        return staged

    @staticmethod
    def _expiry(ttl_ms: int, now_ms: int, index: int) -> int:
        if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool):
            raise InvalidArgument(f"ops[{index}].ttl_ms must be an integer")
        if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
            raise InvalidArgument(
                f"ops[{index}].ttl_ms is {ttl_ms}; it must be 0 (no expiry) to {MAX_TTL_MS}"
            )
        return now_ms + ttl_ms if ttl_ms else 0

    def _commit(self, groups: list[list[tuple[bytes, bool, int, bytes]]]) -> list[Version]:
        """Write validated batches in one WriteBatch; each gets its own timestamp."""
        encode = native.encode_record
        origin = self._origin
        versions: list[Version] = []
        changes: list[Change] = []
        with self._lock:
            self._check_open()
            log_handle = self._log_handle  # gone once closed: read it under the lock
            seq = self._seq
            wb = WriteBatch(raw_mode=True)
            timestamp = 0
            for staged in groups:
                timestamp = self.clock.now()
                for key, tombstone, expires_at_ms, value in staged:
                    record = encode(tombstone, timestamp, expires_at_ms, origin, value)
                    seq += 1
                    wb.put(key, record)
                    wb.put(_U64.pack(seq), _encode_log_value(key, record), log_handle)
                    changes.append(Change(key, record))
                versions.append(Version(timestamp, self.node_id))
            buckets = self._stage_digests(wb, changes)
            wb.put(_META_SEQ, _U64.pack(seq), self._meta_handle)
            wb.put(_META_HLC, _U64.pack(timestamp), self._meta_handle)
            self._write_batch(wb)
            self._seq = seq
            self._publish(buckets, changes, seq, True)
        return versions

    def _stage_digests(
        self, wb: WriteBatch, changes: list[Change], *, replacing: bool = True
    ) -> dict[tuple[bytes, int], int]:
        """Add the digest index and bucket updates for ``changes`` to ``wb``.

        Each change replaces the key's stored record, whose hash is XOR-ed out
        first (``replacing=False`` when rebuilding an empty index). Returns the
        new bucket digests; they go live in memory only after the batch is
        written (``_publish``), so a failed write changes nothing.
        """
        record_hash = native.record_hash
        key_bucket = native.key_bucket
        placement_of = self._placement_of
        db_get = self._db.get
        buckets: dict[tuple[bytes, int], int] = {}
        latest: dict[bytes, bytes] = {}  # a key written twice in one group
        for key, record in changes:
            placement = placement_of(key)
            bucket = key_bucket(key)
            slot = (placement, bucket)
            current = buckets.get(slot)
            if current is None:
                current = self._tree(placement).buckets[bucket]
            previous = latest.get(key) or (db_get(key) if replacing else None)
            if previous is not None:
                current ^= record_hash(key, previous)
            buckets[slot] = current ^ record_hash(key, record)
            latest[key] = record
            wb.put(
                digest.index_key(placement, bucket, key),
                digest.index_version_of(record),
                self._digest_handle,
            )
        for (placement, bucket), value in buckets.items():
            wb.put(digest.meta_key(placement, bucket), _U64.pack(value), self._meta_handle)
        return buckets

    def _publish(
        self,
        buckets: dict[tuple[bytes, int], int],
        changes: list[Change],
        last_seq: int,
        local: bool,
    ) -> None:
        for (placement, bucket), value in buckets.items():
            self._tree(placement).set_bucket(bucket, value)
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes, last_seq, local)
            except Exception:  # a consumer's bug must not fail a committed write
                logging.getLogger(__name__).exception("change listener failed")

    def _tree(self, placement: bytes) -> digest.DigestTree:
        tree = self._trees.get(placement)
        if tree is None:
            tree = self._trees[placement] = digest.DigestTree()
        return tree

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(changes, last_seq, local)`` after every write or apply that changed data.

        Called under the write lock, possibly from a worker thread (group
        commit): it must be quick and thread-safe (e.g. hand off to a loop with
        ``call_soon_threadsafe``). ``last_seq`` is the log's newest seq.
        """
        self._listeners.append(listener)

    def _write_batch(self, wb: WriteBatch) -> None:
        try:
            self._db.write(wb, self._write_opts)
        except Exception as exc:
            raise StorageError(f"RocksDB write failed at {self.path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"engine at {self.path} is closed")

    # -- remote writes -------------------------------------------------------

    def apply(self, key: bytes, record: bytes) -> bool:
        """Apply a record that another node wrote; True if it changed this node's data.

        Deterministic and idempotent: the record is stored only if its version
        (timestamp, origin) is greater than the stored one's, so applying the same
        records in any order, any number of times, leaves every node with the same
        value — the one with the greatest version. Advances the clock past the
        record's timestamp; refuses (ClockSkewError) a timestamp too far ahead.
        """
        return self.apply_many(((key, record),)) == 1

    def apply_many(self, entries: Iterable[tuple[bytes, bytes]]) -> int:
        """``apply`` for each (key, record) in one WriteBatch; returns how many changed.

        Validates every record first; on any error nothing is written. A
        winning record that is dead since before ``gc_horizon_ms`` is not
        stored: it removes the version it beats (see tombstones.py).
        """
        record_version = native.record_version
        horizon = self.gc_horizon_ms
        with self._lock:
            self._check_open()
            pending: dict[bytes, tuple[tuple[int, str], bytes]] = {}
            stored_of: dict[bytes, bytes | None] = {}
            max_ts = 0
            for key, record in entries:
                self.limits.check_key(key)
                version = record_version(record)  # raises CorruptRecord on junk
                max_ts = max(max_ts, version[0])
                current = pending.get(key)
                if current is None:
                    stored = stored_of[key] = self._db.get(key)
                    if stored is not None and record_version(stored) >= version:
                        continue
                elif current[0] >= version:
                    continue
                pending[key] = (version, record)
            if max_ts:
                self.clock.observe(max_ts)  # may refuse the whole batch: nothing written yet
            changes: list[Change] = []
            removals: list[Change] = []  # stored versions beaten by a collectable record
            visible: list[Change] = []  # what readers see change, for listeners
            now = wall_ms()
            for key, (_, record) in pending.items():
                if horizon and tombstones.collectable(record, horizon):
                    stored = stored_of[key]
                    if stored is not None:
                        removals.append(Change(key, stored))
                        if tombstones.reads_live(stored, now):
                            visible.append(Change(key, record))
                    continue
                changes.append(Change(key, record))
                visible.append(changes[-1])
            if not changes and not removals:
                return 0
            wb = WriteBatch(raw_mode=True)
            for key, record in changes:
                wb.put(key, record)
            buckets = self._stage_digests(wb, changes)
            self._stage_removals(wb, removals, buckets)
            wb.put(_META_HLC, _U64.pack(self.clock.last), self._meta_handle)
            self._write_batch(wb)
            self._publish(buckets, visible, self._seq, False)
            return len(changes) + len(removals)

    # -- collecting dead records -----------------------------------------------

    def collect_dead(self, horizon_ms: int, *, chunk: int = 256) -> int:
        """Remove tombstones and expired records dead since before ``horizon_ms``.

        Returns how many were removed. Works through the data ``chunk`` records
        at a time, each chunk under the write lock (so writers wait for one
        chunk at most, and no write can race a removal) and in one WriteBatch.
        Between chunks it yields the GIL: run from a worker thread, it would
        otherwise hold the event loop off for a whole switch interval (5 ms).
        Also makes ``apply`` drop incoming records dead since before the
        horizon (``gc_horizon_ms``). Readers see no change: every removed
        record already read as absent.
        """
        if horizon_ms <= 0:
            return 0
        collectable = tombstones.collectable
        removed = 0
        resume: bytes | None = None
        while True:
            with self._lock:
                self._check_open()
                self.gc_horizon_ms = max(self.gc_horizon_ms, horizon_ms)
                it = self._db.iter()
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
                if removals:
                    wb = WriteBatch(raw_mode=True)
                    buckets: dict[tuple[bytes, int], int] = {}
                    self._stage_removals(wb, removals, buckets)
                    self._write_batch(wb)
                    for (placement, bucket), value in buckets.items():
                        self._tree(placement).set_bucket(bucket, value)
                    removed += len(removals)
            if resume is None:
                return removed
            time.sleep(0)  # let a waiting thread (the event loop) take the GIL

    def _stage_removals(
        self, wb: WriteBatch, removals: list[Change], buckets: dict[tuple[bytes, int], int]
    ) -> None:
        """Stage deleting each (key, stored record) from data and digests into ``wb``.

        Continues from the bucket digests already staged in ``buckets`` and
        updates it in place.
        """
        if not removals:
            return
        record_hash = native.record_hash
        key_bucket = native.key_bucket
        touched: set[tuple[bytes, int]] = set()
        for key, stored in removals:
            placement = self._placement_of(key)
            bucket = key_bucket(key)
            slot = (placement, bucket)
            current = buckets.get(slot)
            if current is None:
                current = self._tree(placement).buckets[bucket]
            buckets[slot] = current ^ record_hash(key, stored)
            touched.add(slot)
            wb.delete(key)
            wb.delete(digest.index_key(placement, bucket, key), self._digest_handle)
        for placement, bucket in touched:
            wb.put(
                digest.meta_key(placement, bucket),
                _U64.pack(buckets[(placement, bucket)]),
                self._meta_handle,
            )

    def records(self, keys: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(key, stored record) for each key that has one, tombstones included."""
        if not keys:
            return []
        raws = cast("list[bytes | None]", self._db.get(list(keys)))
        return [(k, r) for k, r in zip(keys, raws, strict=True) if r is not None]

    # -- anti-entropy digests ------------------------------------------------

    def group_digests(self, placement: bytes) -> list[int]:
        """The 256 top-level digests of a placement group."""
        with self._lock:
            return self._tree(placement).group_digests()

    def bucket_digests(self, placement: bytes, group: int) -> list[int]:
        """The 256 bucket digests of one top-level group."""
        if not 0 <= group < digest.GROUPS:
            raise InvalidArgument(f"digest group {group} is out of range 0..{digest.GROUPS - 1}")
        with self._lock:
            return self._tree(placement).bucket_digests(group)

    def placements(self) -> list[bytes]:
        """Placement groups this node holds data of."""
        with self._lock:
            return sorted(self._trees)

    def list_bucket(self, placement: bytes, bucket: int) -> list[tuple[bytes, int, str]]:
        """(key, timestamp, origin) of every record in a bucket, in key order."""
        if not 0 <= bucket < digest.BUCKETS:
            raise InvalidArgument(f"bucket {bucket} is out of range 0..{digest.BUCKETS - 1}")
        prefix = digest.bucket_index_prefix(placement, bucket)
        out: list[tuple[bytes, int, str]] = []
        it = self._digest.iter()
        it.seek(prefix)
        n = len(prefix)
        while it.valid():
            ikey = it.key()
            if not ikey.startswith(prefix):
                break
            timestamp, origin = digest.decode_index_version(it.value())
            out.append((ikey[n:], timestamp, origin))
            it.next()
        return out

    def _load_digests(self) -> None:
        fingerprint = self._meta.get(_META_PLACEMENT)
        if fingerprint is not None and fingerprint != self.options.placement_fingerprint:
            self.rebuild_digests()
            return
        if fingerprint is None:
            if self._first_key(self._db) is not None:  # data from before digests existed
                self.rebuild_digests()
                return
            self._meta.put(_META_PLACEMENT, self.options.placement_fingerprint)
        it = self._meta.iter()
        it.seek(digest.META_PREFIX)
        while it.valid():
            raw = it.key()
            if not raw.startswith(digest.META_PREFIX):
                break
            placement, bucket = digest.parse_meta_key(raw)
            self._tree(placement).set_bucket(bucket, digest.decode_u64(it.value()))
            it.next()

    @staticmethod
    def _first_key(cf: Rdict) -> bytes | None:
        it = cf.iter()
        it.seek_to_first()
        return it.key() if it.valid() else None

    def rebuild_digests(self) -> None:
        """Recompute the digest index and trees from the data (placement rules changed)."""
        with self._lock:
            self._check_open()
            while (first := self._first_key(self._digest)) is not None:
                wb = WriteBatch(raw_mode=True)
                it = self._digest.iter()
                it.seek(first)
                for _ in range(10_000):
                    if not it.valid():
                        break
                    wb.delete(it.key(), self._digest_handle)
                    it.next()
                self._write_batch(wb)
            self._meta.delete_range(digest.META_PREFIX, digest.META_PREFIX[:-1] + b"0")
            self._trees.clear()
            it = self._db.iter()
            it.seek_to_first()
            batch: list[Change] = []
            while True:
                valid = it.valid()
                if valid:
                    batch.append(Change(it.key(), it.value()))
                    it.next()
                if len(batch) >= 1000 or (not valid and batch):
                    wb = WriteBatch(raw_mode=True)
                    # The index is empty, so no previous version may be XOR-ed out.
                    buckets = self._stage_digests(wb, batch, replacing=False)
                    self._write_batch(wb)
                    for (placement, bucket), value in buckets.items():
                        self._tree(placement).set_bucket(bucket, value)
                    batch = []
                if not valid:
                    break
            self._meta.put(_META_PLACEMENT, self.options.placement_fingerprint)

    # -- replication cursors -------------------------------------------------

    def load_cursor(self, peer_id: str) -> int:
        """The highest seq ``peer_id`` acknowledged (0 if none)."""
        return self._read_u64_meta(_META_CURSOR + peer_id.encode())

    def save_cursor(self, peer_id: str, seq: int) -> None:
        """Persist ``peer_id``'s acknowledged seq (not fsynced: re-delivery is harmless)."""
        self._meta.put(_META_CURSOR + peer_id.encode(), _U64.pack(seq))

    # -- replication log -----------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the newest local write (0 before the first)."""
        return self._seq

    def first_log_seq(self) -> int:
        """The oldest seq still in the log; ``last_seq + 1`` when the log is empty."""
        it = self._log.iter()
        it.seek_to_first()
        if it.valid():
            return int(_U64.unpack(it.key())[0])
        return self._seq + 1

    def read_log(self, from_seq: int, limit: int = 1000) -> list[LogEntry]:
        """Up to ``limit`` log entries with seq >= ``from_seq``, in seq order."""
        if from_seq < 0 or limit < 1:
            raise InvalidArgument(
                f"read_log(from_seq={from_seq}, limit={limit}): both must be >= 0/1"
            )
        out: list[LogEntry] = []
        it = self._log.iter()
        it.seek(_U64.pack(from_seq))
        while it.valid() and len(out) < limit:
            key, record = _decode_log_value(it.value())
            out.append(LogEntry(int(_U64.unpack(it.key())[0]), key, record))
            it.next()
        return out

    def trim_log(self, below_seq: int) -> None:
        """Delete every log entry with seq < ``below_seq``."""
        if below_seq <= 0:
            return
        with self._lock:
            self._check_open()
            self._log.delete_range(_U64.pack(0), _U64.pack(min(below_seq, self._seq + 1)))

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
                self._db.flush_wal(True)
                self._db.flush()
            finally:
                self._release()

    def _release(self) -> None:
        # Column-family objects and handles keep RocksDB (and its LOCK file)
        # alive until they are closed or dropped too.
        self._log.close()
        self._meta.close()
        self._digest.close()
        del self._log_handle, self._meta_handle, self._digest_handle
        self._db.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
