"""The change feed of one PoP: every change that became visible on it, durable and bounded.

Watch replays from here (coordinator/resumable.py). Unlike the replication log
(replog.py: this node's own writes, for its peers), the feed holds every record
that became this node's version of a key, local writes and applied replicated
or repaired records alike, in the order they became visible, under a
node-local feed seq. Entries are staged into the same WriteBatch as the change
(``stage``), so the feed is exactly the sequence of visible changes, survives a
restart, and never reuses a seq.

Stored bytes (integers big-endian, see record.py):

* ``feed`` column family: ``seq (u64) -> appended_ms (u64) | key length (u16)
  | key | record``.
* ``meta``: ``feed/epoch`` (8 random bytes, set when the feed is created: seqs
  of a wiped and recreated directory are not comparable with old tokens),
  ``feed/head`` (last seq, bytes held, per-origin greatest timestamp appended),
  a checkpoint written by ``trim`` and at close, not per write: on open the
  entries past it (durable with their changes) are read back; and
  ``feed/trimmed`` (the greatest seq trimmed and the per-origin greatest
  timestamp among trimmed entries).

The per-origin vectors are what let another PoP accept a token (see
coordinator/watchtoken.py): a PoP that has appended origin O's writes up to
timestamp t has every visible O-write up to t, and it can replay what a token
has not seen only while nothing it trimmed is newer than the token's vector.

Concurrency: ``stage`` and ``committed`` run under the engine's write lock;
``head`` is replaced whole (a tuple) so readers on any thread see a consistent
position; ``trim`` takes the lock for its write only.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from rocksdict import ColumnFamily, Rdict, WriteBatch

from edgekv.storage.record import OFF_ORIGIN, OFF_ORIGIN_LEN, OFF_TIMESTAMP, U16, U64, Change

FEED_CF = "feed"
META_FEED_EPOCH = b"feed/epoch"  # a restore deletes it: the copy is a new feed
_META_HEAD = b"feed/head"
_META_TRIMMED = b"feed/trimmed"
_ENTRY_PREFIX = 10  # appended_ms (8) + key length (2)
# ``trim`` runs on a worker thread and holds the GIL while it walks entries (each
# value is read whole: ~16 us per 24 KiB entry); a thread that never blocks keeps
# the event loop waiting up to the switch interval (5 ms) each time it wants the
# GIL back. Measured: a trim of 680 entries of 24 KiB, what a repair at 16 MiB/s
# appends each second once the feed is full, took 17 ms (11 ms of CPU). So the walk
# steps off the CPU for TRIM_PAUSE_S every TRIM_STEP_ENTRIES entries (~0.3 ms).
TRIM_STEP_ENTRIES = 16
TRIM_PAUSE_S = 0.0001

Vector = Mapping[str, int]  # origin node id -> greatest HLC timestamp


class FeedHead(NamedTuple):
    """A position in the feed: the last seq and, per origin, the greatest timestamp up to it."""

    seq: int
    vector: Vector
    held_bytes: int


class FeedEntry(NamedTuple):
    """One visible change: its feed seq, when it was appended, the key and the stored record."""

    seq: int
    appended_ms: int
    key: bytes
    record: bytes


class Trimmed(NamedTuple):
    """What trimming removed: every seq up to ``seq`` and, per origin, the newest timestamp."""

    seq: int
    vector: Vector


def origin_and_timestamp(record: bytes) -> tuple[str, int]:
    """The version of a validated record, read from its header (cheap, no value copy)."""
    n = record[OFF_ORIGIN_LEN]
    return record[OFF_ORIGIN : OFF_ORIGIN + n].decode("ascii"), U64.unpack_from(
        record, OFF_TIMESTAMP
    )[0]


def encode_vector(vector: Vector) -> bytes:
    """``count (u16) | (origin length (u8) | origin | timestamp (u64))*``, sorted by origin."""
    parts = [U16.pack(len(vector))]
    for origin in sorted(vector):
        raw = origin.encode("ascii")
        parts.append(bytes((len(raw),)) + raw + U64.pack(vector[origin]))
    return b"".join(parts)


def decode_vector(raw: bytes, offset: int = 0) -> tuple[dict[str, int], int]:
    """The vector encoded at ``raw[offset:]`` and the offset after it; ValueError if malformed."""
    try:
        return _decode_vector(raw, offset)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed vector: {exc}") from None


def _decode_vector(raw: bytes, offset: int) -> tuple[dict[str, int], int]:
    (count,) = U16.unpack_from(raw, offset)
    offset += 2
    vector: dict[str, int] = {}
    for _ in range(count):
        n = raw[offset]
        origin = raw[offset + 1 : offset + 1 + n]
        if len(origin) != n or not n:
            raise ValueError("truncated origin")
        offset += 1 + n
        (vector[origin.decode("ascii")],) = U64.unpack_from(raw, offset)
        offset += 8
    return vector, offset


def merge_vectors(a: Vector, b: Vector) -> dict[str, int]:
    """Per origin, the greater timestamp."""
    out = dict(a)
    for origin, ts in b.items():
        if ts > out.get(origin, 0):
            out[origin] = ts
    return out


class ChangeLog:
    """Append (staged in the engine's WriteBatch), read and trim the node's change feed."""

    def __init__(
        self,
        db: Rdict,
        meta: tuple[Rdict, ColumnFamily],
        lock: threading.Lock,
        write: Callable[[WriteBatch], None],
        now_ms: Callable[[], int],
    ) -> None:
        self._feed = db.get_column_family(FEED_CF)
        self._handle = db.get_column_family_handle(FEED_CF)
        self._meta, self._meta_handle = meta
        self._lock = lock
        self._write = write
        self._now_ms = now_ms
        epoch = self._meta.get(META_FEED_EPOCH)
        if epoch is None:
            epoch = os.urandom(8)
            self._meta.put(META_FEED_EPOCH, epoch)
        self.epoch: bytes = bytes(epoch)
        self.trimmed = _decode_trimmed(self._meta.get(_META_TRIMMED))
        self.head = self._recover(_decode_head(self._meta.get(_META_HEAD)))  # replaced whole
        self._checkpointed = self.head.seq
        self._staged: FeedHead | None = None
        self._released = False  # set under the engine's lock when the engine closes

    def _recover(self, checkpoint: FeedHead) -> FeedHead:
        """The head: the last checkpoint, advanced over the entries written since.

        The write path stages only entries (the head is checkpointed by ``trim``
        and at close), so after a crash the entries past the checkpoint, which
        are durable with their changes, are read back here.
        """
        seq, held, vector = checkpoint.seq, checkpoint.held_bytes, dict(checkpoint.vector)
        it = self._feed.iter()
        it.seek(U64.pack(seq + 1))
        while it.valid():
            seq = int(U64.unpack(it.key())[0])
            raw = it.value()
            held += len(raw)
            origin, ts = origin_and_timestamp(decode_entry(seq, raw).record)
            if ts > vector.get(origin, 0):
                vector[origin] = ts
            it.next()
        return FeedHead(max(seq, self.trimmed.seq), vector, held)

    def release(self) -> None:
        """Checkpoint the head, then drop the handles (they keep RocksDB and its LOCK open)."""
        self._released = True
        try:
            self._meta.put(_META_HEAD, _encode_head(self.head))
        finally:
            # Handles first: after a failed write the close raises too ("Writer has
            # previous error"), and a handle left behind keeps RocksDB and its LOCK open,
            # so the in-place reopen (storage/recovery.py) could never open it again.
            del self._handle, self._meta_handle
            self._feed.close()

    # -- appending (caller holds the engine's write lock) -------------------------

    def stage(self, wb: WriteBatch, changes: Sequence[Change]) -> None:
        """Stage ``changes`` as the next entries into ``wb`` (the head is published on commit)."""
        if not changes:
            return
        head = self.head
        seq, held = head.seq, head.held_bytes
        vector: dict[str, int] | None = None
        prefix = U64.pack(self._now_ms())
        pack, pack_len, handle = U64.pack, U16.pack, self._handle
        for key, record in changes:
            seq += 1
            value = prefix + pack_len(len(key)) + key + record
            wb.put(pack(seq), value, handle)
            held += len(value)
            origin, ts = origin_and_timestamp(record)
            if ts > (vector or head.vector).get(origin, 0):
                if vector is None:
                    vector = dict(head.vector)
                vector[origin] = ts
        self._staged = FeedHead(seq, head.vector if vector is None else vector, held)

    def committed(self, changes: Sequence[Change], last_seq: int, local: bool) -> None:
        """Engine listener: the WriteBatch ``stage`` filled is written; publish its head."""
        if self._staged is not None:
            self.head, self._staged = self._staged, None

    # -- reading and trimming ---------------------------------------------------

    def first_seq(self) -> int:
        """The oldest seq still held (``head.seq + 1`` when none is)."""
        return max(self.trimmed.seq, 0) + 1

    def read(self, from_seq: int, limit: int = 256, max_bytes: int = 1 << 20) -> list[FeedEntry]:
        """Entries with ``from_seq`` <= seq <= the published head, in order.

        At most ``limit`` of them and about ``max_bytes`` (at least one), so a
        reader holds a bounded page however big the values are.
        """
        last = self.head.seq
        out: list[FeedEntry] = []
        size = 0
        it = self._feed.iter()
        it.seek(U64.pack(max(from_seq, 0)))
        while it.valid() and len(out) < limit and (not out or size < max_bytes):
            seq = int(U64.unpack(it.key())[0])
            if seq > last:
                break
            raw = it.value()
            out.append(decode_entry(seq, raw))
            size += len(raw)
            it.next()
        return out

    def trim(self, max_entries: int, max_bytes: int, max_age_ms: int) -> int:
        """Drop the oldest entries beyond any bound; returns how many were dropped.

        Records the trimmed seq and per-origin timestamps (``trimmed``) with the
        same write, so a token that needs a dropped entry is known too old.
        """
        if self._released:
            return 0
        head = self.head
        first = self.first_seq()
        excess_entries = head.seq - first + 1 - max_entries
        too_old = self._now_ms() - max_age_ms
        cut, freed, vector = first, 0, dict(self.trimmed.vector)
        it = self._feed.iter()
        it.seek(U64.pack(first))
        walked = 0
        while it.valid():
            walked += 1
            if walked % TRIM_STEP_ENTRIES == 0:
                time.sleep(TRIM_PAUSE_S)  # hand the GIL to the event loop (see TRIM_STEP_ENTRIES)
            seq = int(U64.unpack(it.key())[0])
            raw = it.value()
            appended = int(U64.unpack_from(raw)[0])
            over_bytes = head.held_bytes - freed > max_bytes
            if seq > head.seq or not (
                seq - first < excess_entries or over_bytes or appended < too_old
            ):
                break
            origin, ts = origin_and_timestamp(decode_entry(seq, raw).record)
            if ts > vector.get(origin, 0):
                vector[origin] = ts
            freed += len(raw)
            cut = seq + 1
            it.next()
        # An open iterator keeps RocksDB (and its LOCK) open: never wait for the engine's
        # lock holding one, or an in-place reopen (storage/recovery.py) cannot open it.
        del it
        if cut == first and head.seq == self._checkpointed:
            return 0
        trimmed = Trimmed(cut - 1, vector)
        with self._lock:
            if self._released:  # the engine closed meanwhile
                return 0
            wb = WriteBatch(raw_mode=True)
            if cut > first:
                wb.delete_range(U64.pack(0), U64.pack(cut), self._handle)
                wb.put(
                    _META_TRIMMED, U64.pack(trimmed.seq) + encode_vector(vector), self._meta_handle
                )
                # Published before the entries go: a reader that then misses one knows why.
                self.trimmed = trimmed
            current = self.head
            new_head = FeedHead(current.seq, current.vector, max(0, current.held_bytes - freed))
            wb.put(_META_HEAD, _encode_head(new_head), self._meta_handle)  # the checkpoint
            self._write(wb)
            self.head, self._checkpointed = new_head, new_head.seq
        return cut - first

    def drop(self, doomed: Callable[[bytes], bool]) -> int:
        """Remove every entry whose key is ``doomed`` (a purge after a rule change); how many.

        Tails skip the holes. May run on a worker thread; takes the lock to write.
        """
        seqs: list[bytes] = []
        freed = 0
        it = self._feed.iter()
        it.seek_to_first()
        while it.valid():
            raw = it.value()
            (n,) = U16.unpack_from(raw, 8)
            if doomed(raw[_ENTRY_PREFIX : _ENTRY_PREFIX + n]):
                seqs.append(it.key())
                freed += len(raw)
            it.next()
        del it  # not held while waiting for the lock (see trim)
        if not seqs:
            return 0
        with self._lock:
            if self._released:
                return 0
            wb = WriteBatch(raw_mode=True)
            for seq in seqs:
                wb.delete(seq, self._handle)
            current = self.head
            new_head = FeedHead(current.seq, current.vector, max(0, current.held_bytes - freed))
            wb.put(_META_HEAD, _encode_head(new_head), self._meta_handle)
            self._write(wb)
            self.head = new_head
        return len(seqs)

    @property
    def column_family(self) -> Rdict:
        """The feed column family, for compaction and the residency audit."""
        return self._feed


def decode_entry(seq: int, raw: bytes) -> FeedEntry:
    """A feed column-family value as a FeedEntry."""
    appended = int(U64.unpack_from(raw)[0])
    (n,) = U16.unpack_from(raw, 8)
    key = raw[_ENTRY_PREFIX : _ENTRY_PREFIX + n]
    return FeedEntry(seq, appended, key, raw[_ENTRY_PREFIX + n :])


def _encode_head(head: FeedHead) -> bytes:
    return U64.pack(head.seq) + U64.pack(head.held_bytes) + encode_vector(head.vector)


def _decode_head(raw: bytes | None) -> FeedHead:
    if raw is None:
        return FeedHead(0, {}, 0)
    vector, _ = decode_vector(raw, 16)
    return FeedHead(int(U64.unpack_from(raw)[0]), vector, int(U64.unpack_from(raw, 8)[0]))


def _decode_trimmed(raw: bytes | None) -> Trimmed:
    if raw is None:
        return Trimmed(0, {})
    vector, _ = decode_vector(raw, 8)
    return Trimmed(int(U64.unpack_from(raw)[0]), vector)
