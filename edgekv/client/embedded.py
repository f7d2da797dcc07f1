"""Embedded replica reads: LOCAL reads served in-process from the PoP's own RocksDB files.

``edgekv.Client(..., embedded=DATA_DIR)`` (or the ``EDGEKV_EMBEDDED_DIR``
environment variable, set by the deployment) opens the node's data directory
as a read-only RocksDB *secondary* and answers ``get``, ``get_many`` and
``scan`` from it through the same compiled read path as the node
(``native.Reader``): tombstones and expired records read as absent, exactly as
there. Writes and everything else still go to the node over the network.

Residency: the node's manifest (storage/replica_files.py) names its region and
placement rules. A key this region may not hold is never read from the files
(a copy left by a rule change included): the call goes to the network path,
which routes it to a PoP allowed to hold it. A scan is served here only when
its whole range may be held here; a get_many only when every key may.

Freshness: the node rewrites its change signal after every commit, before it
acknowledges the write. A read that finds the signal ahead of what the reader
has seen catches up first (``try_catch_up_with_primary``, ~25 µs), so it sees
every write acknowledged before it began, as a network LOCAL read would. A
thread also catches up when the signal is written (inotify; a 1 ms poll
elsewhere) and at least every ``catch_up_interval_s``, so most reads find it
done already. Every entry read here carries a
``Staleness`` (lag in RocksDB sequence numbers and in ms); ``staleness()``
reports it at any time. Access control is the file system's: whoever can read
the directory can read every key in it; tokens do not apply.

The module imports no RocksDB until a reader is opened, so the SDK stays
importable without it (tests/unit/test_sdk_imports.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekv import native
from edgekv.client._changewait import ChangeWaiter
from edgekv.client._types import Entry, Staleness
from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.errors import EdgeKVError, FailedPrecondition, InvalidArgument
from edgekv.keyrange import scan_bounds
from edgekv.storage.record import Version
from edgekv.storage.replica_files import Manifest, SignalReader, read_manifest

log = logging.getLogger(__name__)

ENV_HINT = "EDGEKV_EMBEDDED_DIR"
DEFAULT_CATCH_UP_INTERVAL_S = 0.05
DEFAULT_BLOCK_CACHE_MB = 32
NETWORK: Any = object()  # "not answerable here": the caller takes the network path
FRESH = Staleness(0, 0.0)
# As the node's Engine.scan: records read per page item (plus a floor), so runs of
# tombstones cost bounded work per page.
_SCAN_EXAMINE_FACTOR = 8
_SCAN_EXAMINE_FLOOR = 1024


@dataclass(frozen=True, slots=True)
class _Rules:
    """One manifest's residency view; swapped whole when the node restarts."""

    manifest: Manifest
    placement: PlacementRules
    all_local: bool
    refused: tuple[tuple[bytes, bytes], ...]  # ranges this region may not hold

    @classmethod
    def of(cls, manifest: Manifest) -> _Rules:
        rules = [PlacementRule(prefix, regions) for prefix, regions in manifest.placement]
        placement = PlacementRules(rules, manifest.regions)
        refused = tuple(placement.refused_ranges(manifest.region))
        return cls(manifest, placement, not refused, refused)

    def holds(self, key: bytes) -> bool:
        return self.all_local or self.manifest.region in self.placement.regions_for(key)

    def holds_range(self, lo: bytes, hi: bytes) -> bool:
        """Whether every key of [lo, hi) (hi b"" = unbounded) may be held here."""
        return not any((not b or lo < b) and (not hi or a < hi) for a, b in self.refused)


class EmbeddedReader:
    """A read-only RocksDB secondary of one node's data directory, kept caught up.

    ``get``/``get_many``/``scan`` return ``NETWORK`` when the call must go to the
    node instead (a key or range not held in this region, or the files failing).
    Safe to use from several threads; ``close`` once.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        catch_up_interval_s: float = DEFAULT_CATCH_UP_INTERVAL_S,
        block_cache_mb: int = DEFAULT_BLOCK_CACHE_MB,
        catch_up_on_read: bool = True,
        background: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir() or not os.access(self.data_dir, os.R_OK | os.X_OK):
            raise FailedPrecondition(f"{self.data_dir} is not a readable directory")
        from edgekv.storage.database import META_CF, META_NODE_ID  # RocksDB only from here on

        self._interval_s = catch_up_interval_s
        # A read that finds the signal ahead catches up first (~25 µs), so it sees
        # every write the node acknowledged before the read began. False leaves it
        # to the thread: reads never wait, and may lag by a wake-up.
        self.catch_up_on_read = catch_up_on_read
        self._block_cache_mb = block_cache_mb
        self._rules = _Rules.of(read_manifest(self.data_dir))
        self._signal = SignalReader(self.data_dir)
        self._scratch = Path(tempfile.mkdtemp(prefix="edgekv-embedded-"))
        self._opened = 0
        self._lock = threading.Lock()  # one catch-up or reopen at a time
        self._retired: list[Any] = []  # replaced secondaries, closed with the reader
        self._pending_ns = 0  # commit time of the oldest change seen but not caught up
        self._synced_seq = 0
        self.catch_ups = 0
        self.failures = 0
        self._closed = False
        try:
            self._open()
            owner = self._db.get_column_family(META_CF).get(META_NODE_ID)
            if owner != self.node_id.encode():
                raise FailedPrecondition(
                    f"{self.data_dir} belongs to node {owner!r}, its manifest says "
                    f"{self.node_id!r}: not one edgekv data directory"
                )
            self.catch_up()
        except BaseException:
            self._release()
            raise
        self._waiter = ChangeWaiter(self._signal.path, self._signal_moved)
        # Without ``background`` only reads (catch_up_on_read) and ``catch_up()`` catch up.
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self.run_catch_up, name=f"edgekv-embedded-{self.node_id}", daemon=True
            )
            self._thread.start()

    @property
    def node_id(self) -> str:
        """The node whose files these are (``served_by`` of every entry read here)."""
        return self._rules.manifest.node_id

    @property
    def region(self) -> str:
        return self._rules.manifest.region

    # -- reads -------------------------------------------------------------------

    def get(self, key: bytes) -> Entry | None:
        """The live entry under ``key``, None if absent, or NETWORK."""
        seq, wall_ns, epoch = self._signal.read()
        rules = self._rules
        if epoch != rules.manifest.epoch:
            rules = self._reload_rules()
        if not rules.holds(key):
            return NETWORK
        try:
            if seq > self._synced_seq and self.catch_up_on_read:
                self.catch_up()
            found = self._get(key)
        except EdgeKVError:
            raise  # bad key: the same InvalidArgument the node sends
        except Exception as exc:  # the files failed under us: answer over the network
            return self._failed(exc)
        if found is None:
            return None
        stale = FRESH if seq <= self._synced_seq else self._lagging(seq, wall_ns)
        return Entry(key, found[0], Version(found[1], found[2]), found[3], rules.manifest.node_id,
                     stale)  # fmt: skip

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """``get`` of each key in order (one multi-get), or NETWORK if any is held elsewhere."""
        seq, wall_ns, epoch = self._signal.read()
        rules = self._rules
        if epoch != rules.manifest.epoch:
            rules = self._reload_rules()
        limit = rules.manifest.max_batch_ops
        if len(keys) > limit:
            raise InvalidArgument(
                f"batch get has {len(keys)} keys; the limit is {limit} (max_batch_ops)"
            )
        if not rules.all_local and not all(map(rules.holds, keys)):
            return NETWORK
        try:
            if seq > self._synced_seq and self.catch_up_on_read:
                self.catch_up()
            found = self._reader.get_many(keys)
        except EdgeKVError:
            raise
        except Exception as exc:
            return self._failed(exc)
        stale = FRESH if seq <= self._synced_seq else self._lagging(seq, wall_ns)
        node = rules.manifest.node_id
        return [
            None if f is None else Entry(k, f[0], Version(f[1], f[2]), f[3], node, stale)
            for k, f in zip(keys, found, strict=True)
        ]

    def scan(
        self, prefix: bytes, start: bytes, end: bytes, page_size: int, keys_only: bool,
        limit: int | None,
    ) -> Iterator[Entry] | None:  # fmt: skip
        """Entries of the scan, lazily, in key order; None if the range is held elsewhere.

        Pages of ``page_size`` records are read from one iterator each; a page
        that fails (the files failing) ends the iterator with the error.
        """
        lo, hi = scan_bounds(prefix, start, end)
        rules = self._rules
        if self._signal.read()[2] != rules.manifest.epoch:
            rules = self._reload_rules()
        if not 1 <= page_size <= rules.manifest.max_scan_limit:
            raise InvalidArgument(
                f"scan limit is {page_size}; it must be 1 to {rules.manifest.max_scan_limit} "
                f"(max_scan_limit)"
            )
        if not rules.holds_range(lo, hi):
            return None
        return self._scan(lo, hi, page_size, keys_only, limit)

    def _scan(
        self, lo: bytes, hi: bytes, page_size: int, keys_only: bool, remaining: int | None
    ) -> Iterator[Entry]:
        examined = page_size * _SCAN_EXAMINE_FACTOR + _SCAN_EXAMINE_FLOOR
        start: bytes | None = lo
        while start is not None and (remaining is None or remaining > 0):
            seq, wall_ns, _ = self._signal.read()
            if seq > self._synced_seq and self.catch_up_on_read:
                self.catch_up()
            size = page_size if remaining is None else min(page_size, remaining)
            db = self._db
            items, last = self._reader.scan(db.iter(), start, hi, size, examined)
            stale = FRESH if seq <= self._synced_seq else self._lagging(seq, wall_ns)
            node = self.node_id
            for key, value, ts, origin, expires in items:
                yield Entry(key, b"" if keys_only else value, Version(ts, origin), expires, node,
                            stale)  # fmt: skip
            if remaining is not None:
                remaining -= len(items)
            start = None if last is None else last + b"\x00"  # the successor of ``last``
            if start is not None and hi and start >= hi:
                return

    # -- staleness -----------------------------------------------------------------

    def staleness(self) -> Staleness:
        """How far this reader lags the node right now."""
        seq, wall_ns, _ = self._signal.read()
        return FRESH if seq <= self._synced_seq else self._lagging(seq, wall_ns)

    def _lagging(self, seq: int, wall_ns: int) -> Staleness:
        since = self._pending_ns or wall_ns
        return Staleness(seq - self._synced_seq, max(0.0, (time.time_ns() - since) / 1e6))

    # -- catching up ---------------------------------------------------------------

    def run_catch_up(self) -> None:
        """The catch-up thread: on every signal write, and at least every interval."""
        while not self._closed:
            self._waiter.wait(self._interval_s)
            if self._closed:
                break
            try:
                self.catch_up()
            except Exception as exc:  # a task boundary: log, reopen, go on
                self.failures += 1
                log.warning("edgekv embedded: catch-up with %s failed: %s; reopening",
                            self.data_dir, exc)  # fmt: skip
                try:
                    self._reopen()
                except Exception as again:
                    log.warning("edgekv embedded: reopening %s failed: %s", self.data_dir, again)
                    time.sleep(min(1.0, self._interval_s * 10))

    def catch_up(self) -> None:
        """Bring the secondary up to the node's latest commit (blocking; any thread)."""
        with self._lock:
            if self._signal_replaced():  # a restored data_dir: new files, new signal
                self._signal = SignalReader(self.data_dir)  # the old mapping: left to GC
                self._reload_rules()
                self._reopen_locked()
            seq, wall_ns, epoch = self._signal.read()
            if epoch != self._rules.manifest.epoch:
                self._reload_rules()
                self._reopen_locked()  # a restarted node: start from its new files
            if seq > self._synced_seq and not self._pending_ns:
                self._pending_ns = wall_ns
            self._db.try_catch_up_with_primary()
            self._synced_seq = synced = self._db.latest_sequence_number()
            self.catch_ups += 1
            if synced >= seq:
                self._pending_ns = 0

    def _signal_replaced(self) -> bool:
        try:
            return os.stat(self._signal.path).st_ino != self._signal.inode
        except OSError:
            return False  # gone for now (a restore in progress): keep the last state

    def _signal_moved(self) -> bool:
        return self._signal.read()[0] > self._synced_seq

    def _reload_rules(self) -> _Rules:
        rules = _Rules.of(read_manifest(self.data_dir))
        if rules.manifest.node_id != self._rules.manifest.node_id:
            raise FailedPrecondition(
                f"{self.data_dir} now belongs to node {rules.manifest.node_id!r}, not "
                f"{self.node_id!r}; reopen the client"
            )
        self._rules = rules
        return rules

    def _open(self) -> None:
        from edgekv.storage.database import open_secondary

        self._opened += 1
        where = self._scratch / str(self._opened)
        db = open_secondary(self.data_dir, where, self._block_cache_mb)
        self._db = db
        self._reader = native.Reader(db.get)
        self._get = self._reader.get  # the hot path: bound straight to the compiled Reader

    def _reopen(self) -> None:
        with self._lock:
            self._reopen_locked()

    def _reopen_locked(self) -> None:
        old = self._db
        self._open()
        self._db.try_catch_up_with_primary()
        self._synced_seq = self._db.latest_sequence_number()
        for retired in self._retired:  # old enough: no read still uses them
            retired.close()
        self._retired = [old]

    def _failed(self, exc: Exception) -> Any:
        self.failures += 1
        log.warning("edgekv embedded: read from %s failed (%s); this call goes to the network",
                    self.data_dir, exc)  # fmt: skip
        return NETWORK

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop catching up and close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._waiter.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._waiter.release()
        self._release()

    def __enter__(self) -> EmbeddedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        for db in [*self._retired, getattr(self, "_db", None)]:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
        self._retired = []
        self._signal.close()
        shutil.rmtree(self._scratch, ignore_errors=True)


def open_embedded(
    data_dir: str | os.PathLike[str] | None,
) -> tuple[EmbeddedReader | None, str | None]:
    """The client's embedded reader for ``data_dir`` (or ``$EDGEKV_EMBEDDED_DIR``), if any.

    Returns (reader, None) when on; (None, None) when not asked for; (None, why)
    when asked for but unusable: the reason is logged as a warning, and reads
    go over the network.
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_HINT) or None
        if data_dir is None:
            return None, None
    try:
        return EmbeddedReader(data_dir), None
    except (EdgeKVError, OSError, ImportError) as exc:
        why = f"embedded reads from {os.fspath(data_dir)} are off: {exc}"
        log.warning("edgekv: %s; reads go to the node over the network", why)
        return None, why
