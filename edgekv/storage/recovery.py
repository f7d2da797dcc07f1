"""When RocksDB cannot take writes (a full disk), and how a node gets them back by itself.

RocksDB turns a failed write (ENOSPC while appending to the WAL, a flush that
failed) into an error it keeps: every later write fails ("Writer has previous
error") until the database is reopened, even once space is free again, and
rocksdict exposes no ``DB::Resume``. So:

1. The first write that fails marks the store degraded (``StorageState``). That
   write fails with DiskFull (RESOURCE_EXHAUSTED) when the disk is full,
   StorageError otherwise; every later write (local, replicated, upkeep) is
   refused the same way before it reaches RocksDB. Reads are served from the
   open database as before.
2. The node's ``run_storage_recovery`` task reports the store on health
   (NOT_SERVING while degraded), watches the free space of the data directory,
   and once there is room (``REOPEN_MARGIN_BYTES`` plus the WAL to replay)
   reopens RocksDB in place (``Engine.reopen``): close it, open it again, build
   the replication log, digests and the rest on the new handles, keep the clock,
   the listeners and the read path. Opening replays the WAL, and every write
   that was acknowledged was appended to it whole first, so none is lost; the
   failed write's torn tail is dropped (RocksDB's point-in-time recovery).
3. Writes are accepted again, and health says SERVING.

A write refused while degraded was never handed to RocksDB: it is not applied.
The write that met the error was not acknowledged; it was not applied either
unless the failure came after RocksDB appended it whole (an fsync that failed
with ``sync_writes``), so a client treats that one as of unknown outcome.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

from edgekv.errors import DiskFull, EdgeKVError, StorageError

log = logging.getLogger("edgekv.storage")

# Free bytes the data directory needs, besides the WAL the open replays (and
# flushes to a table file), before a degraded store is reopened.
REOPEN_MARGIN_BYTES = 16 * 2**20
_NO_SPACE = ("No space left on device", "ENOSPC", "Disk quota exceeded")


class StorageState:
    """Whether one engine's RocksDB takes writes, and why not.

    Changed under the engine's write lock (``check_writable`` and
    ``write_failed`` are called by its single write funnel); read from any
    thread (health, metrics).
    """

    def __init__(self, path: Path, node_id: str) -> None:
        self.path = path
        self.node_id = node_id
        self.degraded = False  # writes refused until reopened
        self.disk_full = False  # ... because the data directory's disk is full
        self.cause = ""  # RocksDB's words for the write that failed
        self.since_s = 0.0  # monotonic time the store degraded (0: it is not)
        self.degraded_total = 0  # times it degraded
        self.reopens_total = 0  # times it was reopened and took writes again
        self.refused_writes = 0  # writes refused while degraded

    def check_writable(self) -> None:
        """Raise the refusal while degraded (nothing is handed to RocksDB)."""
        if self.degraded:
            self.refused_writes += 1
            raise self._refusal()

    def write_failed(self, exc: Exception) -> EdgeKVError:
        """RocksDB failed a write with ``exc``; the error to raise. An I/O error
        degrades the store (RocksDB keeps it until reopened)."""
        text = str(exc)
        if "IO error" not in text and not _no_space(text):
            return StorageError(f"RocksDB write failed at {self.path}: {text}")
        if not self.degraded:
            self.degraded, self.cause, self.since_s = True, text, time.monotonic()
            self.degraded_total += 1
            self.disk_full = _no_space(text) or free_bytes(self.path) < REOPEN_MARGIN_BYTES
            log.error(
                "node %s refuses writes: RocksDB failed a write at %s (%s); reads are still "
                "served; it reopens its database once %s",
                self.node_id, self.path, text,
                "space is freed there" if self.disk_full else "the error clears",
            )  # fmt: skip
        return self._refusal()

    def reopened(self) -> None:
        """The database was reopened in place: writes go to RocksDB again."""
        if self.degraded:
            log.warning(
                "node %s takes writes again: reopened RocksDB at %s after %.1f s",
                self.node_id, self.path, time.monotonic() - self.since_s,
            )  # fmt: skip
        self.degraded, self.disk_full, self.since_s = False, False, 0.0
        self.reopens_total += 1

    def _refusal(self) -> EdgeKVError:
        if self.disk_full:
            return DiskFull(
                f"node {self.node_id} refuses writes: the disk of its data directory "
                f"{self.path} is full ({free_bytes(self.path)} bytes free; RocksDB: "
                f"{self.cause}); it takes writes again by itself once space is freed there; "
                f"reads are still served; write through another PoP meanwhile"
            )
        return StorageError(
            f"node {self.node_id} refuses writes: RocksDB failed a write at {self.path} "
            f"({self.cause}); it takes writes again once it could reopen its database; "
            f"reads are still served"
        )


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (0 when it cannot be read)."""
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return 0


def room_to_reopen(path: Path) -> bool:
    """Is there room to reopen the database at ``path``: the margin, plus its WAL
    files (the open replays them into a table file)?"""
    try:
        wal = sum(f.stat().st_size for f in path.glob("*.log"))
    except OSError:
        wal = 0
    return free_bytes(path) >= REOPEN_MARGIN_BYTES + wal


def close_all(closers: Iterable[Callable[[], object]]) -> list[Exception]:
    """Call every closer even when some fail (after a failed write every RocksDB flush
    does, and a column family left open keeps the database's LOCK); the errors."""
    errors = []
    for close in closers:
        try:
            close()
        except Exception as exc:  # closing goes on: each handle must be dropped
            errors.append(exc)
    return errors


def _no_space(text: str) -> bool:
    return any(words in text for words in _NO_SPACE)


class Reopenable(Protocol):
    """What ``run_storage_recovery`` needs of the engine (storage/engine.py)."""

    path: Path
    storage: StorageState

    def reopen(self) -> None: ...


async def run_storage_recovery(
    engine: Reopenable,
    on_writable: Callable[[bool], Awaitable[None]],
    *,
    interval_s: float = 0.5,
    max_backoff_s: float = 30.0,
) -> None:
    """Reopen ``engine`` once its degraded store has room; tell ``on_writable`` each change.

    The reopen runs on the event loop's thread, so no read there sees the
    moment between closing and opening; it takes the engine's write lock. A
    failed reopen is retried with backoff (reads fail until one succeeds).
    """
    writable, wait_s = True, interval_s
    while True:
        await asyncio.sleep(wait_s)
        state = engine.storage
        if state.degraded and room_to_reopen(engine.path):
            try:
                engine.reopen()
                wait_s = interval_s
            except Exception:  # task boundary: the store stays degraded, tried again later
                wait_s = min(max_backoff_s, wait_s * 2)
                log.exception("reopening RocksDB at %s failed; retrying in %.1f s",
                              engine.path, wait_s)  # fmt: skip
        if writable == state.degraded:
            writable = not state.degraded
            await on_writable(writable)


def open_released(open_: Callable[[], None], *, wait_s: float = 2.0) -> None:
    """``open_()`` the database just closed, retrying while its LOCK is still held: an
    iterator that another thread is finishing keeps the old database open."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            open_()
            return
        except StorageError as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
        gc.collect()  # an iterator left in a cycle holds the old database too
        time.sleep(0.05)
