"""The storage engine of one PoP: RocksDB (through rocksdict) plus the replication log.

One RocksDB database per node, three column families:

* ``default`` — the data: user key -> record (storage/record.py).
* ``log``     — the replication log: 8-byte big-endian seq -> u16 key length,
  key, record. Every local write appends here in the same WriteBatch that
  changes the data, so the log is exactly the sequence of local writes.
* ``meta``    — engine state: the last seq, the clock's high-water mark, the
  node id that owns the directory. Updated in every write batch, so a crash
  can never leave the counters behind the data.

Concurrency: reads may run on any thread. Writes are serialised by one lock
(seq and clock order must match log order); a node's event loop calls them
inline because each is a few microseconds.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from edgekv import native
from edgekv.errors import FailedPrecondition, InvalidArgument, StorageError
from edgekv.limits import DEFAULT_LIMITS, Limits
from edgekv.storage.clock import DEFAULT_MAX_SKEW_MS, HybridClock, wall_ms
from edgekv.storage.record import Item, Version

LOG_CF = "log"
META_CF = "meta"
_META_SEQ = b"seq"
_META_HLC = b"hlc"
_META_NODE_ID = b"node_id"
_META_FORMAT = b"engine_format"
ENGINE_FORMAT = b"1"

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000  # ten years: beyond that it is a bug, not a TTL

# A scan page reads at most this many records per item asked for (plus a floor),
# so a long run of tombstones costs a short page, not an unbounded one.
_SCAN_EXAMINE_FACTOR = 8
_SCAN_EXAMINE_FLOOR = 1024


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


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``.

    Returns b"" (no upper bound) when no such key exists (prefix is all 0xff).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b""
    return stripped[:-1] + bytes((stripped[-1] + 1,))


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

    def __init__(self, path: str | os.PathLike[str], node_id: str, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.limits = self.options.limits
        self.path = Path(path)
        self.node_id = node_id
        self._origin = node_id.encode("ascii")
        if not 1 <= len(self._origin) <= 255:
            raise InvalidArgument(f"node id is {len(self._origin)} bytes; it must be 1 to 255")
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = self._open_rocksdb()
        self._log = self._db.get_column_family(LOG_CF)
        self._log_handle = self._db.get_column_family_handle(LOG_CF)
        self._meta = self._db.get_column_family(META_CF)
        self._meta_handle = self._db.get_column_family_handle(META_CF)
        self._write_opts = WriteOptions()
        self._write_opts.sync = self.options.sync_writes
        self._check_owner()
        self._lock = threading.Lock()  # guards _seq, the clock, and write ordering
        self._seq = self._read_u64_meta(_META_SEQ)
        self.clock = HybridClock(
            self._read_u64_meta(_META_HLC), max_skew_ms=self.options.max_clock_skew_ms
        )
        self._reader = native.Reader(self._db.get)
        # The read hot path: bound straight to the compiled Reader, no Python frame.
        self.get = self._reader.get
        self._closed = False

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
        log_opts = Options(raw_mode=True)
        meta_opts = Options(raw_mode=True)
        try:
            return Rdict(
                str(self.path),
                opts,
                column_families={LOG_CF: log_opts, META_CF: meta_opts},
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
        self.limits.check_batch(len(ops))
        now = wall_ms()
        staged: list[tuple[bytes, bool, int, bytes]] = []  # key, tombstone, expires, value
        seen: set[bytes] = set()
        for i, op in enumerate(ops):
            key = op.key
            self.limits.check_key(key)
            if key in seen:
                raise InvalidArgument(f"ops[{i}]: key {key[:64]!r} appears twice in one batch")
            seen.add(key)
            if isinstance(op, PutOp):
                self.limits.check_value(op.value)
                staged.append((key, False, self._expiry(op.ttl_ms, now, i), op.value))
            elif isinstance(op, DeleteOp):
                staged.append((key, True, 0, b""))
            else:
                raise InvalidArgument(f"ops[{i}] is {type(op).__name__}; expected PutOp or DeleteOp")
        return self._commit(staged)

    @staticmethod
    def _expiry(ttl_ms: int, now_ms: int, index: int) -> int:
        if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool):
            raise InvalidArgument(f"ops[{index}].ttl_ms must be an integer")
        if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
            raise InvalidArgument(
                f"ops[{index}].ttl_ms is {ttl_ms}; it must be 0 (no expiry) to {MAX_TTL_MS}"
            )
        return now_ms + ttl_ms if ttl_ms else 0

    def _commit(self, staged: list[tuple[bytes, bool, int, bytes]]) -> Version:
        encode = native.encode_record
        origin = self._origin
        with self._lock:
            self._check_open()
            timestamp = self.clock.now()
            seq = self._seq
            wb = WriteBatch(raw_mode=True)
            for key, tombstone, expires_at_ms, value in staged:
                record = encode(tombstone, timestamp, expires_at_ms, origin, value)
                seq += 1
                wb.put(key, record)
                wb.put(_U64.pack(seq), _encode_log_value(key, record), self._log_handle)
            wb.put(_META_SEQ, _U64.pack(seq), self._meta_handle)
            wb.put(_META_HLC, _U64.pack(timestamp), self._meta_handle)
            self._write_batch(wb)
            self._seq = seq
        return Version(timestamp, self.node_id)

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

        Validates every record first; on any error nothing is written.
        """
        record_version = native.record_version
        with self._lock:
            self._check_open()
            pending: dict[bytes, tuple[tuple[int, str], bytes]] = {}
            max_ts = 0
            for key, record in entries:
                self.limits.check_key(key)
                version = record_version(record)  # raises CorruptRecord on junk
                max_ts = max(max_ts, version[0])
                current = pending.get(key)
                if current is None:
                    stored = self._db.get(key)
                    if stored is not None and record_version(stored) >= version:
                        continue
                elif current[0] >= version:
                    continue
                pending[key] = (version, record)
            if max_ts:
                self.clock.observe(max_ts)  # may refuse the whole batch: nothing written yet
            if not pending:
                return 0
            wb = WriteBatch(raw_mode=True)
            for key, (_, record) in pending.items():
                wb.put(key, record)
            wb.put(_META_HLC, _U64.pack(self.clock.last), self._meta_handle)
            self._write_batch(wb)
            return len(pending)

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
            raise InvalidArgument(f"read_log(from_seq={from_seq}, limit={limit}): both must be >= 0/1")
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
        del self._log_handle, self._meta_handle
        self._db.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
