"""Ships this node's replication log to one peer over a long-lived gRPC stream.

One ``PeerSender`` per peer holds all of that peer's state (cursor, in-flight
batches, failures, last contact), as hashicorp/raft's followerReplication does.
Shipping starts the moment a write commits (the change feed wakes the
sender); there is no polling interval. Unacknowledged batches are bounded in
count and bytes (a window sized for long, fat WAN links, so a 100 ms link still
streams), and batches are read from the on-disk log, so a slow or dead peer
costs bounded memory and never slows local writes or other peers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from edgekv import native
from edgekv.aiowait import wait_event
from edgekv.errors import EdgeKVError
from edgekv.replication.paging import record_cost
from edgekv.storage.clock import physical_ms, wall_ms
from edgekv.storage.engine import Engine
from edgekv.storage.record import timestamp_of
from edgekv.storage.replog import LogEntry
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SenderSettings:
    batch_entries: int = 512
    # At most this many bytes per batch, or one Write if larger: the node sets it
    # to its client message limit, a quarter of what the peer port accepts.
    max_batch_bytes: int = 4 * 1024 * 1024
    max_inflight: int = 64  # unacknowledged batches
    max_inflight_bytes: int = 16 * 1024 * 1024
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    # An idle stream still sends an empty batch this often, so the peer's lag
    # figures stay fresh and a dead connection is noticed.
    keepalive_s: float = 5.0
    # A peer never reached since this node started is probably still starting
    # too: its failures are logged at info until then, and one warning says so
    # if it stays unreachable this long.
    startup_grace_s: float = 30.0


class _Window:
    """Batches sent but not yet acknowledged: bounded in count and bytes.

    One batch is always allowed, however large, so progress never stalls.
    Owned by one stream of one PeerSender.
    """

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._pending: deque[tuple[int, int]] = deque()  # (through_seq, bytes)
        self.bytes = 0
        self._changed = asyncio.Event()

    def has_room(self) -> bool:
        return not self._pending or (
            len(self._pending) < self._max_batches and self.bytes < self._max_bytes
        )

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._changed.clear()
            await self._changed.wait()

    def sent(self, through_seq: int, nbytes: int) -> None:
        self._pending.append((through_seq, nbytes))
        self.bytes += nbytes

    def acked(self, seq: int) -> None:
        while self._pending and self._pending[0][0] <= seq:
            self.bytes -= self._pending.popleft()[1]
        self._changed.set()


class PeerSender:
    """Replication of the local log to one peer.

    ``acked_seq`` is the highest seq the peer made durable; it is persisted in
    the engine (``save_cursor``), and a restarted stream resumes after it.
    ``needs_repair`` is set when the peer's cursor fell below the trimmed log:
    the anti-entropy loop repairs it, then log shipping resumes at the log's
    start. Runs on the node's event loop only.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        peer_id: str,
        address: str,
        hello: replication_pb2.PeerHello,
        allowed: Callable[[bytes], bool],
        channel_factory: Callable[[str], grpc.aio.Channel],
        settings: SenderSettings = SenderSettings(),
        on_repair_needed: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.peer_id = peer_id
        self.address = address
        self._hello = hello
        self._allowed = allowed  # may this peer hold the key? (data residency)
        self._channel_factory = channel_factory
        self.settings = settings
        self._on_repair_needed = on_repair_needed
        self.acked_seq = engine.load_cursor(peer_id)
        self.sent_seq = self.acked_seq
        self.connected = False
        self.failures = 0
        self.last_error = ""
        self.last_ack_monotonic = 0.0
        self.needs_repair = False
        self._started_monotonic = time.monotonic()  # for startup_grace_s
        self._ever_connected = False
        self._warned_never_connected = False
        self._wake = asyncio.Event()
        self._window: _Window | None = None  # the current stream's, for metrics
        self._entry_bytes = 0  # average shipped entry size of the last batch (sizes reads)
        # (seq, timestamp) of the last log entry a batch covered, for keep-alives.
        self._through = (0, 0)
        # Futures of writers awaiting receipts (receipts.py): resolved, with the
        # monotonic time, once the peer acknowledges their seq.
        self._ack_waiters: list[tuple[int, asyncio.Future[float]]] = []

    def wake(self) -> None:
        """The local log grew: ship now (change-feed callback)."""
        self._wake.set()

    def acked_future(self, seq: int) -> asyncio.Future[float]:
        """A future resolved (with ``time.monotonic()``) once the peer acknowledged ``seq``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.acked_seq >= seq:
            future.set_result(time.monotonic())
            return future
        if len(self._ack_waiters) >= 1024:  # a dead peer: drop the writers that gave up
            self._ack_waiters = [(s, f) for s, f in self._ack_waiters if not f.done()]
        self._ack_waiters.append((seq, future))
        return future

    def _on_acked(self, seq: int) -> None:
        now = time.monotonic()
        keep = []
        for needed, future in self._ack_waiters:
            if future.done():
                continue  # the writer stopped waiting
            if needed <= seq:
                future.set_result(now)
            else:
                keep.append((needed, future))
        self._ack_waiters = keep

    # -- lag, for Members and metrics ----------------------------------------

    @property
    def inflight_bytes(self) -> int:
        return self._window.bytes if self._window is not None else 0

    def lag_entries(self) -> int:
        return max(0, self.engine.last_seq - self.acked_seq)

    def lag_seconds(self) -> float:
        """Age of the oldest local write the peer has not acknowledged."""
        if self.engine.last_seq <= self.acked_seq:
            return 0.0
        oldest = self.engine.read_log(self.acked_seq + 1, 1)
        if not oldest:
            return 0.0
        timestamp, _ = native.record_version(oldest[0].record)
        return max(0.0, (wall_ms() - physical_ms(timestamp)) / 1000.0)

    # -- the loop -------------------------------------------------------------

    async def run_sender(self) -> None:
        """Ship forever, reconnecting with jittered exponential backoff."""
        backoff = self.settings.initial_backoff_s
        while True:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self._failed(f"{exc.code().name}: {exc.details()}")
            except Exception as exc:  # task boundary: log, back off, retry
                log.exception("sender to %s failed at seq %d", self.peer_id, self.sent_seq)
                self._failed(repr(exc))
            else:
                backoff = self.settings.initial_backoff_s
                continue
            if self.last_ack_monotonic and time.monotonic() - self.last_ack_monotonic < 1.0:
                backoff = self.settings.initial_backoff_s  # it was working a moment ago
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.settings.max_backoff_s)

    def _failed(self, error: str) -> None:
        if self._ever_connected:
            if self.connected or not self.failures:
                log.warning(
                    "replication to %s interrupted at seq %d: %s",
                    self.peer_id, self.acked_seq, error,
                )  # fmt: skip
        elif not self.failures:
            log.info("replication to %s waiting for the peer to come up: %s", self.peer_id, error)
        elif (
            not self._warned_never_connected
            and time.monotonic() - self._started_monotonic >= self.settings.startup_grace_s
        ):
            self._warned_never_connected = True
            log.warning(
                "replication to %s has not connected in %.0fs (startup_grace_s): %s",
                self.peer_id, self.settings.startup_grace_s, error,
            )  # fmt: skip
        self.connected = False
        self.failures += 1
        self.last_error = error

    async def _stream_once(self) -> None:
        channel = self._channel_factory(self.address)
        stub = replication_pb2_grpc.ReplicationStub(channel)
        call = stub.Replicate()
        inflight = self._window = _Window(
            self.settings.max_inflight, self.settings.max_inflight_bytes
        )
        reader = asyncio.create_task(self._read_acks(call, inflight))
        try:
            await call.write(replication_pb2.ReplicateRequest(hello=self._hello))
            # An empty batch at once: its ack tells us (and Members) the stream is
            # up within one round trip, not after the first write or keepalive.
            inflight.sent(self.acked_seq, 0)
            await call.write(self._batch([], self.acked_seq, self.acked_seq + 1))
            await self._ship(call, inflight, reader)
        finally:
            reader.cancel()
            call.cancel()

    async def _read_acks(self, call: grpc.aio.StreamStreamCall, inflight: _Window) -> None:
        async for ack in call:
            if ack.acked_seq > self.acked_seq:
                self.acked_seq = ack.acked_seq
                self.engine.save_cursor(self.peer_id, ack.acked_seq)
                if self._ack_waiters:
                    self._on_acked(ack.acked_seq)
            if not self.connected:
                log.info(
                    "replication to %s connected; acked through seq %d",
                    self.peer_id,
                    self.acked_seq,
                )
            self.connected = True
            self._ever_connected = True
            self.failures = 0
            self.last_error = ""
            self.last_ack_monotonic = time.monotonic()
            inflight.acked(ack.acked_seq)
        raise EdgeKVError(f"peer {self.peer_id} closed the replication stream")

    async def _ship(
        self,
        call: grpc.aio.StreamStreamCall,
        inflight: _Window,
        reader: asyncio.Task[None],
    ) -> None:
        engine = self.engine
        settings = self.settings
        next_seq = self.acked_seq + 1
        while True:
            first = engine.first_log_seq()
            if next_seq < first:
                # The log we would need is trimmed: anti-entropy repairs the peer.
                if not self.needs_repair:
                    log.warning(
                        "peer %s needs seq %d but the log starts at %d; repairing by anti-entropy",
                        self.peer_id, next_seq, first,
                    )  # fmt: skip
                    self.needs_repair = True
                    if self._on_repair_needed is not None:
                        self._on_repair_needed(self.peer_id)
                next_seq = first
            await inflight.wait_for_room()
            if reader.done():
                reader.result()  # re-raise why the ack stream ended
            self._wake.clear()
            limit = settings.batch_entries
            if self._entry_bytes:  # read about one batch's bytes, not batch_entries of big values
                limit = max(1, min(limit, settings.max_batch_bytes // self._entry_bytes + 1))
            entries = whole_writes(engine, engine.read_log(next_seq, limit), limit)
            if not entries:
                if not await wait_event(self._wake, settings.keepalive_s):
                    inflight.sent(next_seq - 1, 0)
                    await call.write(self._batch([], next_seq - 1, next_seq))
                continue
            shipped, through, nbytes = take_batch(entries, self._allowed, settings.max_batch_bytes)
            if shipped:
                self._entry_bytes = max(1, nbytes // len(shipped))
            self._through = (through, _timestamp_at(entries, through))
            inflight.sent(through, nbytes)
            await call.write(self._batch(shipped, through, next_seq))
            self.sent_seq = through
            next_seq = through + 1

    def _batch(
        self, entries: list[replication_pb2.LogEntry], through: int, from_seq: int
    ) -> replication_pb2.ReplicateRequest:
        """A batch covering [from_seq, through] (the receiver's frontier checks both ends)."""
        seq, timestamp = self._through
        return replication_pb2.ReplicateRequest(
            entries=entries,
            through_seq=through,
            origin_last_seq=self.engine.last_seq,
            sent_at_ms=wall_ms(),
            from_seq=from_seq,
            through_timestamp=timestamp if seq == through else 0,
        )

    def repaired(self) -> None:
        """Anti-entropy finished with this peer: clear the repair flag."""
        self.needs_repair = False


def whole_writes(engine: Engine, entries: list[LogEntry], limit: int) -> list[LogEntry]:
    """``entries`` (one ``read_log(seq, limit)``) extended until a Write ends.

    The ops of one local Write share one version timestamp and follow each
    other in the log; the peer applies each shipped batch in one WriteBatch,
    so shipping a Write whole keeps it atomic on the peer too. A read shorter
    than ``limit`` reached the end of the log, and a Write enters the log in
    one WriteBatch, so its last Write is already whole: no extra read.
    """
    if len(entries) < limit:
        return entries
    last = _write_of(entries[-1])
    while True:
        more = engine.read_log(entries[-1].seq + 1, limit)
        same = list(itertools.takewhile(lambda e: _write_of(e) == last, more))
        entries.extend(same)
        if len(same) < len(more) or not more:
            return entries


def take_batch(
    entries: list[LogEntry], allowed: Callable[[bytes], bool], max_bytes: int
) -> tuple[list[replication_pb2.LogEntry], int, int]:
    """The first batch of ``entries``: (entries to ship, through seq, bytes).

    Stops before the entry that would take the batch past ``max_bytes``, but
    only where a Write ends (never half of a Write), so a batch is at most
    ``max_bytes`` or one Write, whichever is larger: with ``max_bytes`` the
    client message limit, always a quarter of what a peer accepts. Entries the
    peer may not hold are skipped and cost nothing.
    """
    shipped: list[replication_pb2.LogEntry] = []
    nbytes = 0
    through = entries[0].seq - 1
    for i, e in enumerate(entries):
        if allowed(e.key):
            cost = record_cost(e.key, e.record)
            if shipped and nbytes + cost > max_bytes and _write_of(entries[i - 1]) != _write_of(e):
                break  # the rest goes in the next batch
            shipped.append(replication_pb2.LogEntry(seq=e.seq, key=e.key, record=e.record))
            nbytes += cost
        through = e.seq
    return shipped, through, nbytes


def _timestamp_at(entries: list[LogEntry], seq: int) -> int:
    """The version timestamp of the entry with ``seq`` in ``entries`` (0 if absent)."""
    for e in reversed(entries):
        if e.seq == seq:
            return timestamp_of(e.record)
        if e.seq < seq:
            break
    return 0


def _write_of(entry: LogEntry) -> int:
    """The version timestamp of a log entry: the same for every op of one Write."""
    return timestamp_of(entry.record)


async def flush_to_peers(
    engine: Engine, senders: Mapping[str, PeerSender], timeout_s: float
) -> None:
    """Give connected senders a moment to ship the last writes before exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = [s for s in senders.values() if s.connected and s.acked_seq < engine.last_seq]
        if not pending:
            return
        await asyncio.sleep(0.01)
