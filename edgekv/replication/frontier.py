"""The applied frontier: per origin node, how far this node has applied its writes in order.

For every other node (an *origin*), ``AppliedFrontier`` keeps the greatest
hybrid-logical-clock timestamp up to which this node has applied that origin's
writes *in log order*: the origin's Replicate stream ships its log in seq order
(entries this node may not hold are skipped but still covered by the batch's
``through_seq``), so after a batch that starts where the last one ended, every
write of the origin up to the batch's ``through_timestamp`` that this node may
hold is here. For this node itself the frontier is its clock: a write is
durable before it is acknowledged, and the clock never goes back.

A session token (edgekv/consistency.py) is *covered* when, for each origin it
names, the frontier has reached the token's timestamp; SESSION reads are
served only then (coordinator/session.py).

Only in-order sources advance it. Anti-entropy applies records key by key and
out of order, so it never does, except in one case: when a batch does not
start where the previous one ended (the origin skipped past its log retention,
or this node lost its place), the frontier stops and the stream is followed on
the side; once an anti-entropy sync with that origin that *started after* the
gap was seen completes, everything before the gap is here, and the frontier
jumps to the stream's position. The contiguous frontier is persisted in the
meta column family (``frontier/<origin>``), so it survives a restart; a stream
that resumes past it is a gap again, healed the same way.

Runs on the node's event loop (the peer service and the request layer call it);
waiting is event-driven: a waiter sleeps on a future that the batch that covers
it resolves.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from edgekv.storage.clock import wall_ms

log = logging.getLogger(__name__)

META_FRONTIER_PREFIX = b"frontier/"  # + origin id -> u64 seq | u64 timestamp
_SEQ_TS = struct.Struct(">QQ")


class _Meta(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...


class MetaOf:
    """A meta column family looked up on every use: the engine's, which an in-place
    reopen after a full disk (storage/recovery.py) replaces with a new one."""

    def __init__(self, meta: Callable[[], _Meta]) -> None:
        self._meta = meta

    def get(self, key: bytes) -> bytes | None:
        return self._meta().get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._meta().put(key, value)


class _Clock(Protocol):
    @property
    def last(self) -> int: ...


class AppliedFrontier:
    """Per origin, the (seq, timestamp) through which this node applied its writes in order.

    ``meta`` is the engine's meta column family (persistence), ``clock`` the
    node's HLC (its own frontier). ``on_gap(origin)`` is called when a stream
    from ``origin`` left a gap (the node asks anti-entropy for a sync).
    """

    def __init__(
        self,
        meta: _Meta,
        node_id: str,
        clock: _Clock,
        origins: list[str],
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        self._meta = meta
        self.node_id = node_id
        self._clock = clock
        self.on_gap = on_gap
        self._applied: dict[str, tuple[int, int]] = {}
        for origin in origins:
            raw = meta.get(META_FRONTIER_PREFIX + origin.encode())
            seq, ts = _SEQ_TS.unpack(raw) if raw is not None and len(raw) == 16 else (0, 0)
            self._applied[origin] = (seq, ts)
        # Origins whose stream left a gap: when it was seen (wall ms), and the
        # stream's own (seq, timestamp) since, applied but not yet contiguous.
        self._gap_since_ms: dict[str, int] = {}
        self._stream: dict[str, tuple[int, int]] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}

    # -- reading -----------------------------------------------------------------

    def applied(self, origin: str) -> int:
        """The timestamp through which ``origin``'s writes are applied here (0: none known)."""
        if origin == self.node_id:
            return self._clock.last
        return self._applied.get(origin, (0, 0))[1]

    def knows(self, origin: str) -> bool:
        """Is ``origin`` a node of this cluster (this node included)?"""
        return origin == self.node_id or origin in self._applied

    def missing(self, seen: Mapping[str, int]) -> dict[str, int]:
        """The origins of ``seen`` not yet covered here, with the timestamps they need."""
        return {o: ts for o, ts in seen.items() if ts > self.applied(o)}

    def gaps(self) -> dict[str, int]:
        """Origins whose frontier waits for an anti-entropy sync, with when the gap was seen."""
        return dict(self._gap_since_ms)

    async def wait(self, seen: Mapping[str, int], timeout_s: float) -> dict[str, int]:
        """Wait until ``seen`` is covered or ``timeout_s`` passes; returns what is still missing.

        This node's own origin is never waited for (its frontier is its clock;
        a timestamp ahead of it was never issued here, or was lost).
        """
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            missing = self.missing(seen)
            waitable = [o for o in missing if o != self.node_id and o in self._applied]
            left_s = deadline - time.monotonic()
            if not waitable or left_s <= 0:
                return missing
            origin = waitable[0]
            future: asyncio.Future[None] = loop.create_future()
            entry = (missing[origin], future)
            self._waiters.setdefault(origin, []).append(entry)
            try:
                # Not wait_for: on Python 3.12+ its timeout cancels the current task, which
                # for a KV.Stream operation run eagerly (edgekv/eager.py) is the stream's.
                await asyncio.wait((future,), timeout=left_s)
            finally:
                waiters = self._waiters.get(origin)
                if waiters is not None and entry in waiters:
                    waiters.remove(entry)

    # -- advancing ---------------------------------------------------------------

    def on_batch(self, origin: str, from_seq: int, through_seq: int, through_ts: int) -> None:
        """A Replicate batch from ``origin`` covering [from_seq, through_seq] was applied.

        ``through_ts`` is the timestamp of the origin's log entry at
        ``through_seq`` (0: not known; the seq still advances). Batches that
        repeat what is applied change nothing; one that starts past the
        frontier opens a gap (module docstring).
        """
        if origin not in self._applied:
            return  # not a node of the cluster file: nothing to track
        if origin in self._gap_since_ms:
            seq, ts = self._stream[origin]
            if from_seq > seq + 1:
                self._open_gap(origin, through_seq, through_ts)
            else:
                self._stream[origin] = (max(seq, through_seq), max(ts, through_ts))
            return
        seq, ts = self._applied[origin]
        if from_seq > seq + 1:
            self._open_gap(origin, through_seq, through_ts)
            return
        if through_seq > seq or through_ts > ts:
            self._advance(origin, max(seq, through_seq), max(ts, through_ts))

    def on_synced(self, origin: str, started_ms: int) -> None:
        """An anti-entropy sync with ``origin`` that started at ``started_ms`` completed."""
        since = self._gap_since_ms.get(origin)
        if since is None or started_ms < since:
            return  # no gap, or the sync began before the gap: it may not cover it
        del self._gap_since_ms[origin]
        seq, ts = self._applied[origin]
        stream_seq, stream_ts = self._stream.pop(origin)
        log.info("frontier of %s repaired by anti-entropy: through seq %d", origin, stream_seq)
        self._advance(origin, max(seq, stream_seq), max(ts, stream_ts))

    def _open_gap(self, origin: str, through_seq: int, through_ts: int) -> None:
        if origin not in self._gap_since_ms:
            log.info(
                "replication from %s resumed past seq %d: its frontier waits for anti-entropy",
                origin, self._applied[origin][0],
            )  # fmt: skip
        self._gap_since_ms[origin] = wall_ms()
        self._stream[origin] = (through_seq, through_ts)
        if self.on_gap is not None:
            self.on_gap(origin)

    def _advance(self, origin: str, seq: int, ts: int) -> None:
        self._applied[origin] = (seq, ts)
        self._meta.put(META_FRONTIER_PREFIX + origin.encode(), _SEQ_TS.pack(seq, ts))
        waiters = self._waiters.get(origin)
        if waiters:
            keep = []
            for needed, future in waiters:
                if needed <= ts:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((needed, future))
            self._waiters[origin] = keep
