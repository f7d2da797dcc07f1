"""The replication log of one node, and how far each peer has acknowledged it.

Stored bytes (integers big-endian, see record.py):

* ``log`` column family: ``seq (u64) -> key length (u16) | key | record``. Every
  local write appends here in the same WriteBatch that changes the data, so
  the log is exactly the sequence of local writes, and seqs are never reused.
* ``meta`` column family: ``seq -> last seq (u64)``, staged with the entries,
  and ``cursor/<peer id> -> acknowledged seq (u64)`` per peer.

The engine owns the column families and the write lock; it calls ``stage``
and ``committed`` under that lock, and exposes the reads (``Engine.read_log``
and friends) to senders and the log trimmer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rocksdict import ColumnFamily, Rdict, WriteBatch

from edgekv.errors import InvalidArgument
from edgekv.storage.record import U16, U64

LOG_CF = "log"
_META_SEQ = b"seq"
META_CURSOR_PREFIX = b"cursor/"  # + peer id


class LogEntry(NamedTuple):
    """One replication-log entry: the local write with sequence number ``seq``."""

    seq: int
    key: bytes
    record: bytes


class ReplicationLog:
    """Append (staged in the engine's WriteBatch), read, trim; peer cursors.

    ``last_seq`` is the seq of the newest committed local write (0 before the
    first); it changes only in ``committed``, under the engine's write lock.
    Reads may run on any thread.
    """

    def __init__(
        self,
        log: tuple[Rdict, ColumnFamily],
        meta: tuple[Rdict, ColumnFamily],
        *,
        lock: threading.Lock,
        check_open: Callable[[], None],
    ) -> None:
        self._log, self._log_handle = log  # (column family, handle): the engine's
        self._meta, self._meta_handle = meta
        self._lock = lock
        self._check_open = check_open
        self.last_seq = self._read_u64(_META_SEQ)  # guarded by _lock

    def release(self) -> None:
        """Drop the column-family handles: they keep RocksDB (and its LOCK) open."""
        del self._log_handle, self._meta_handle

    # -- appending (caller holds the engine's write lock) -------------------------

    def stage(self, wb: WriteBatch, changes: Sequence[tuple[bytes, bytes]]) -> int:
        """Stage ``changes`` as the next log entries, and the new last seq, into ``wb``.

        Returns that seq; pass it to ``committed`` once ``wb`` is written.
        """
        pack = U64.pack
        pack_len = U16.pack
        log_handle = self._log_handle
        seq = self.last_seq
        for key, record in changes:
            seq += 1
            wb.put(pack(seq), pack_len(len(key)) + key + record, log_handle)
        wb.put(_META_SEQ, pack(seq), self._meta_handle)
        return seq

    def committed(self, seq: int) -> None:
        """The WriteBatch staged up to ``seq`` is written."""
        self.last_seq = seq

    # -- reading and trimming ---------------------------------------------------

    def first_seq(self) -> int:
        """The oldest seq still in the log; ``last_seq + 1`` when the log is empty."""
        it = self._log.iter()
        it.seek_to_first()
        if it.valid():
            return int(U64.unpack(it.key())[0])
        return self.last_seq + 1

    def read(self, from_seq: int, limit: int = 1000) -> list[LogEntry]:
        """Up to ``limit`` log entries with seq >= ``from_seq``, in seq order."""
        if from_seq < 0 or limit < 1:
            raise InvalidArgument(
                f"read_log(from_seq={from_seq}, limit={limit}): both must be >= 0/1"
            )
        out: list[LogEntry] = []
        it = self._log.iter()
        it.seek(U64.pack(from_seq))
        while it.valid() and len(out) < limit:
            key, record = decode_entry(it.value())
            out.append(LogEntry(int(U64.unpack(it.key())[0]), key, record))
            it.next()
        return out

    def trim(self, below_seq: int) -> None:
        """Delete every log entry with seq < ``below_seq``."""
        if below_seq <= 0:
            return
        with self._lock:
            self._check_open()
            self._log.delete_range(U64.pack(0), U64.pack(min(below_seq, self.last_seq + 1)))

    def stage_removals(self, wb: WriteBatch, seqs: Sequence[int]) -> None:
        """Stage deleting single entries (a purge after a placement change) into ``wb``.

        Readers skip the gaps; the caller holds the engine's write lock.
        """
        for seq in seqs:
            wb.delete(U64.pack(seq), self._log_handle)

    # -- peer cursors -----------------------------------------------------------

    def load_cursor(self, peer_id: str) -> int:
        """The highest seq ``peer_id`` acknowledged (0 if none)."""
        return self._read_u64(META_CURSOR_PREFIX + peer_id.encode())

    def save_cursor(self, peer_id: str, seq: int) -> None:
        """Persist ``peer_id``'s acknowledged seq (not fsynced: re-delivery is harmless)."""
        self._meta.put(META_CURSOR_PREFIX + peer_id.encode(), U64.pack(seq))

    def _read_u64(self, key: bytes) -> int:
        raw = self._meta.get(key)
        return 0 if raw is None else int(U64.unpack(raw)[0])


class LogAccess:
    """The replication log as the engine offers it (``Engine`` inherits this): reads
    for the senders and the log trimmer, trimming, and the peer cursors."""

    _replog: ReplicationLog  # the engine's, rebuilt when it reopens

    @property
    def last_seq(self) -> int:
        """The seq of the newest local write (0 before the first)."""
        return self._replog.last_seq

    def first_log_seq(self) -> int:
        """The oldest seq still in the log; ``last_seq + 1`` when the log is empty."""
        return self._replog.first_seq()

    def read_log(self, from_seq: int, limit: int = 1000) -> list[LogEntry]:
        """Up to ``limit`` log entries with seq >= ``from_seq``, in seq order."""
        return self._replog.read(from_seq, limit)

    def trim_log(self, below_seq: int) -> None:
        """Delete every log entry with seq < ``below_seq``."""
        self._replog.trim(below_seq)

    def load_cursor(self, peer_id: str) -> int:
        """The highest seq ``peer_id`` acknowledged (0 if none)."""
        return self._replog.load_cursor(peer_id)

    def save_cursor(self, peer_id: str, seq: int) -> None:
        """Persist ``peer_id``'s acknowledged seq (not fsynced: re-delivery is harmless)."""
        self._replog.save_cursor(peer_id, seq)


def decode_entry(raw: bytes) -> tuple[bytes, bytes]:
    """(key, record) of a log column-family value: u16 key length | key | record."""
    (n,) = U16.unpack_from(raw)
    return raw[2 : 2 + n], raw[2 + n :]
