"""Anti-entropy: repair whatever log shipping could not, by comparing digests.

Each node periodically (with jitter) syncs with each peer, for every placement
group both may hold: compare the 256 group digests, then the bucket digests of
differing groups, then list only differing buckets and exchange the records
whose versions differ — pulling what the peer has newer, pushing what we have
newer. Cost is proportional to the difference, not the data size. It repairs
a peer past log retention, a node restored from an old backup, and a brand-new
node with an empty data directory. It moves records in small pages, paced in
bytes per second by the node's RepairPacer (pacer.py), so that reads at a node
being repaired stay fast. Applying is idempotent, so a sync that is
cut off half-way is simply finished by the next one. Only records this node
asked for and may hold are applied, whatever the peer sends back; the rest are
dropped and counted (replication/refusals.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc

from edgekv.aiowait import wait_event
from edgekv.errors import DiskFull, EdgeKVError
from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S, DEFAULT_MAX_MESSAGE_BYTES
from edgekv.replication.listing import page_range_in_steps
from edgekv.replication.pacer import LISTING_SLICE_BYTES, SLICE_BYTES, RepairPacer, apply_paced
from edgekv.replication.paging import (
    BucketPage,
    key_batches,
    listing_cost,
    record_cost,
    record_page,
)
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.syncturns import SyncTurns, SyncYielded
from edgekv.storage import digest
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

_SEGMENTS_PER_CALL = 32
_BUCKETS_PER_CALL = 512
_RECORDS_PER_CALL = 1000
_FIRST_FETCH_KEYS = 16  # keys asked per fetch before the record size is known
_CALL_TIMEOUT_S = 30.0


@dataclass
class SyncStats:
    """What one sync with one peer did."""

    segments_differing: int = 0
    buckets_differing: int = 0
    pulled: int = 0  # records fetched from the peer that changed local data
    pushed: int = 0  # records sent to the peer that changed its data
    duration_s: float = 0.0


@dataclass
class PeerSyncState:
    """Anti-entropy bookkeeping for one peer (owned by the AntiEntropy loop)."""

    # Wall ms at which the last complete sync started (0: none since start). The
    # peer then held everything this node held at that moment, or newer.
    synced_from_ms: int = 0
    last_stats: SyncStats = field(default_factory=SyncStats)
    last_error: str = ""
    syncs: int = 0
    pulled_total: int = 0
    pushed_total: int = 0


async def sync_with_peer(
    engine: Engine,
    stub: replication_pb2_grpc.ReplicationStub,
    hello: replication_pb2.PeerHello,
    placement: bytes,
    *,
    may_hold: Callable[[bytes], bool],
    refusals: PeerRefusals,
    page_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    pacer: RepairPacer | None = None,
    check_turn: Callable[[], None] | None = None,
) -> SyncStats:
    """Make this node and the peer hold the same newest records of ``placement``.

    ``may_hold(key)``: may this node hold the key (data residency)? Only such
    keys are fetched, and only records asked for are applied (``refusals``
    counts the rest). Every message of the sync is bounded by about
    ``page_bytes`` (a listing or record batch longer than that comes in pages),
    so records of any size up to max_value_bytes move, whatever their count;
    listings and records move in smaller slices still (pacer.py), at the pace
    of ``pacer`` (default: its default rate, for this sync alone).
    ``check_turn()`` is called before each fetch and push and may stop the
    sync by raising (SyncYielded: the peer is pushing records to this node,
    syncturns.py); a sync that finds nothing to move always completes.
    """
    started = time.monotonic()
    pace = _Pace(pacer or RepairPacer(), page_bytes, check_turn)
    stats = SyncStats()
    remote = await stub.GetDigests(
        replication_pb2.DigestRequest(hello=hello, placement=placement), timeout=_CALL_TIMEOUT_S
    )
    local_segments = engine.digests.segment_digests(placement)
    differing = [
        g for g in range(digest.SEGMENTS) if remote.segment_digests[g] != local_segments[g]
    ]
    stats.segments_differing = len(differing)
    for start in range(0, len(differing), _SEGMENTS_PER_CALL):
        segments = differing[start : start + _SEGMENTS_PER_CALL]
        resp = await stub.GetDigests(
            replication_pb2.DigestRequest(hello=hello, placement=placement, segments=segments),
            timeout=_CALL_TIMEOUT_S,
        )
        buckets: list[int] = []
        for i, segment in enumerate(segments):
            local = engine.digests.bucket_digests(placement, segment)
            remote_b = resp.bucket_digests[
                i * digest.BUCKETS_PER_SEGMENT : (i + 1) * digest.BUCKETS_PER_SEGMENT
            ]
            base = segment * digest.BUCKETS_PER_SEGMENT
            buckets += [
                base + j for j in range(digest.BUCKETS_PER_SEGMENT) if remote_b[j] != local[j]
            ]
        stats.buckets_differing += len(buckets)
        for b_start in range(0, len(buckets), _BUCKETS_PER_CALL):
            await _reconcile_buckets(
                engine,
                stub,
                hello,
                placement,
                buckets[b_start : b_start + _BUCKETS_PER_CALL],
                stats,
                _Intake(may_hold, refusals),
                pace,
            )
    stats.duration_s = time.monotonic() - started
    return stats


async def _reconcile_buckets(
    engine: Engine,
    stub: replication_pb2_grpc.ReplicationStub,
    hello: replication_pb2.PeerHello,
    placement: bytes,
    buckets: Sequence[int],
    stats: SyncStats,
    intake: _Intake,
    pace: _Pace,
) -> None:
    """Exchange the newer records of ``buckets``, one byte-bounded listing page at a time."""
    after = b""
    while buckets:
        listed = await stub.ListBuckets(
            replication_pb2.ListBucketsRequest(
                hello=hello,
                placement=placement,
                buckets=buckets,
                after_key=after,
                max_bytes=pace.listing_bytes,
            ),
            timeout=_CALL_TIMEOUT_S,
        )
        await pace.pacer.pace(sum(listing_cost((e.key, 0, e.origin)) for e in listed.entries))
        page = BucketPage(
            [(e.key, e.timestamp, e.origin) for e in listed.entries],
            listed.truncated,
            listed.resume_index if listed.truncated else len(buckets),
            listed.resume_after_key,
        )
        if page.truncated and (
            page.resume_index >= len(buckets)
            or (page.resume_index == 0 and page.resume_after_key <= after)
        ):
            raise EdgeKVError(
                f"peer listing of placement {placement!r} did not progress "
                f"(resume at {page.resume_index} after {page.resume_after_key!r})"
            )
        theirs = {key: (ts, origin) for key, ts, origin in page.entries}
        # Our side of the page, in short steps on the loop (listing.py).
        ours = await page_range_in_steps(
            engine.digests.bucket_reader(placement), buckets, after, page
        )
        mine = {key: (ts, origin) for key, ts, origin in ours}
        pull = intake.wanted(k for k, v in theirs.items() if (m := mine.get(k)) is None or m < v)
        push = [k for k, v in mine.items() if (t := theirs.get(k)) is None or t < v]
        await _pull(engine, stub, hello, pull, stats, intake, pace)
        await _push(engine, stub, hello, push, stats, pace)
        if not page.truncated:
            return
        buckets = buckets[page.resume_index :]
        after = page.resume_after_key


async def _pull(
    engine: Engine,
    stub: replication_pb2_grpc.ReplicationStub,
    hello: replication_pb2.PeerHello,
    keys: Sequence[bytes],
    stats: SyncStats,
    intake: _Intake,
    pace: _Pace,
) -> None:
    """Fetch ``keys`` from the peer; each answer is a byte-bounded page (paging.py).

    Only records asked for and allowed here are applied (``intake``); a record
    too far ahead of this node's clock is quarantined, not the whole page.
    Answers are asked for in slices (pacer.py) of about as many keys as fit,
    judged by the records seen so far, and applied at the pacer's pace in
    short slices (apply_paced): reads on the loop keep answering during a repair.
    """

    def apply(pairs: list[tuple[bytes, bytes]]) -> int:
        return engine.apply_many(pairs, quarantine_skewed=True)

    for batch in key_batches(keys, _RECORDS_PER_CALL, pace.page_bytes):
        done = 0
        while done < len(batch):
            pace.check_turn()
            asked = batch[done : done + pace.fetch_keys]
            answer = await stub.FetchRecords(
                replication_pb2.FetchRecordsRequest(
                    hello=hello, keys=asked, max_bytes=pace.slice_bytes
                ),
                timeout=_CALL_TIMEOUT_S,
            )
            pairs = intake.accepted(asked, answer.records)
            stats.pulled += await apply_paced(pace.pacer, apply, pairs)
            done += answer.resume_index or len(asked)
            if pairs:
                average = sum(record_cost(k, r) for k, r in pairs) // len(pairs)
                pace.fetch_keys = max(1, min(_RECORDS_PER_CALL, pace.slice_bytes // average + 1))


async def _push(
    engine: Engine,
    stub: replication_pb2_grpc.ReplicationStub,
    hello: replication_pb2.PeerHello,
    keys: Sequence[bytes],
    stats: SyncStats,
    pace: _Pace,
) -> None:
    """Send the records of ``keys`` to the peer in paced slices (pacer.py)."""
    start = 0
    while start < len(keys):
        records, start = record_page(engine.records, keys, start, pace.slice_bytes)
        if not records:
            continue
        pace.check_turn()
        await pace.pacer.pace(sum(record_cost(k, r) for k, r in records))
        resp = await stub.PushRecords(
            replication_pb2.RecordBatch(
                hello=hello,
                records=[replication_pb2.KeyRecord(key=k, record=r) for k, r in records],
            ),
            timeout=_CALL_TIMEOUT_S,
        )
        stats.pushed += resp.applied


class _Pace:
    """How one sync sizes and paces its messages: slices within ``page_bytes``, at ``pacer``."""

    __slots__ = ("check_turn", "fetch_keys", "listing_bytes", "pacer", "page_bytes", "slice_bytes")

    def __init__(
        self, pacer: RepairPacer, page_bytes: int, check_turn: Callable[[], None] | None
    ) -> None:
        self.pacer = pacer
        self.check_turn = check_turn or (lambda: None)  # raises to stop the sync
        self.page_bytes = page_bytes  # the most any one message may carry
        self.slice_bytes = min(SLICE_BYTES, page_bytes)
        self.listing_bytes = min(LISTING_SLICE_BYTES, page_bytes)
        # Keys per fetch, sized by the records seen so far in this sync.
        self.fetch_keys = _FIRST_FETCH_KEYS


class _Intake:
    """What a sync takes from a peer: only keys this node may hold, only records it asked for."""

    __slots__ = ("_may_hold", "_refusals")

    def __init__(self, may_hold: Callable[[bytes], bool], refusals: PeerRefusals) -> None:
        self._may_hold = may_hold
        self._refusals = refusals

    def wanted(self, keys: Iterable[bytes]) -> list[bytes]:
        """The listed keys worth fetching: those this node may hold (the rest counted)."""
        listed = list(keys)
        wanted = [k for k in listed if self._may_hold(k)]
        if len(wanted) != len(listed):
            self._refusals.dropped("not_held", len(listed) - len(wanted))
            log.warning("peer listed %d keys this region may not hold", len(listed) - len(wanted))
        return wanted

    def accepted(
        self, asked: Sequence[bytes], records: Iterable[replication_pb2.KeyRecord]
    ) -> list[tuple[bytes, bytes]]:
        """The fetched records to apply: asked for and allowed here (the rest counted)."""
        asked_set = set(asked)
        received = [(r.key, r.record) for r in records]
        accepted = [(k, r) for k, r in received if k in asked_set and self._may_hold(k)]
        if len(accepted) != len(received):
            self._refusals.dropped("not_asked", len(received) - len(accepted))
            log.warning("peer sent %d records not asked for", len(received) - len(accepted))
        return accepted


class AntiEntropy:
    """The periodic, jittered anti-entropy loop of one node.

    ``placements_with(peer_id)`` lists the placements both nodes may
    hold; ``stub_for(peer_id)`` gives a Replication stub for the peer.
    ``trigger`` asks for a sync now (a peer past log retention, a new node).
    ``may_hold(key)`` says whether this node may hold a key; records refused
    for residency are counted in ``refusals``. Every sync moves at most
    ``bytes_per_s`` on average (``pacer``, which the node's peer service shares).
    A sync with a peer that is syncing with this node gives way when the peer
    has the turn (``turns``, fed by the peer service: syncturns.py) and runs
    again later.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        hello: replication_pb2.PeerHello,
        peers: Sequence[str],
        stub_for: Callable[[str], replication_pb2_grpc.ReplicationStub],
        placements_with: Callable[[str], Sequence[bytes]],
        interval_s: float,
        may_hold: Callable[[bytes], bool],
        refusals: PeerRefusals,
        on_synced: Callable[[str, SyncStats], None] | None = None,
        page_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        bytes_per_s: int = DEFAULT_ANTIENTROPY_BYTES_PER_S,
    ) -> None:
        self._engine = engine
        # The node's anti-entropy byte budget, shared with its peer service.
        self.pacer = RepairPacer(bytes_per_s)
        # Which peers are syncing with this node, shared with its peer service.
        self.turns = SyncTurns(hello.node_id)
        self._may_hold = may_hold
        self._refusals = refusals
        self._page_bytes = page_bytes  # byte budget of one sync message (paging.py)
        self._hello = hello
        self._stub_for = stub_for
        self._placements_with = placements_with
        self.interval_s = interval_s
        self._on_synced = on_synced
        self.state = {peer: PeerSyncState() for peer in peers}
        self._due: set[str] = set(peers)  # sync every peer once soon after start
        self._kick = asyncio.Event()
        self._kick.set()
        self.repaired_records = 0

    def trigger(self, peer_id: str | None = None) -> None:
        self._due.update([peer_id] if peer_id else self.state)
        self._kick.set()

    async def sync_peer(self, peer_id: str) -> SyncStats:
        """Sync every shared placement with one peer now."""
        total = SyncStats()
        stub = self._stub_for(peer_id)
        for placement in self._placements_with(peer_id):
            stats = await sync_with_peer(
                self._engine,
                stub,
                self._hello,
                placement,
                may_hold=self._may_hold,
                refusals=self._refusals,
                page_bytes=self._page_bytes,
                pacer=self.pacer,
                check_turn=lambda: self.turns.check(peer_id),
            )
            total.segments_differing += stats.segments_differing
            total.buckets_differing += stats.buckets_differing
            total.pulled += stats.pulled
            total.pushed += stats.pushed
            total.duration_s += stats.duration_s
        return total

    async def run_antientropy(self) -> None:
        while True:
            interval_s = self.interval_s * (0.75 + random.random() / 2)
            if not await wait_event(self._kick, interval_s):
                self._due.update(self.state)
            self._kick.clear()
            due, self._due = self._due, set()
            for peer_id in sorted(due):
                state = self.state[peer_id]
                started_ms = wall_ms()
                try:
                    stats = await self.sync_peer(peer_id)
                except asyncio.CancelledError:
                    raise
                except SyncYielded as exc:  # the peer's sync repairs both sides; try later
                    log.debug("anti-entropy with %s: %s", peer_id, exc)
                    asyncio.get_running_loop().call_later(
                        self.turns.active_s, self.trigger, peer_id
                    )
                    continue
                except grpc.aio.AioRpcError as exc:
                    state.last_error = f"{exc.code().name}: {exc.details()}"
                    log.debug("anti-entropy with %s failed: %s", peer_id, state.last_error)
                    continue
                except DiskFull as exc:  # logged once by the engine (storage/recovery.py)
                    state.last_error = str(exc)
                    continue
                except Exception as exc:  # task boundary: log and carry on with the next peer
                    state.last_error = repr(exc)
                    log.exception("anti-entropy with %s failed", peer_id)
                    continue
                self.turns.completed(peer_id)
                state.last_error = ""
                state.syncs += 1
                state.synced_from_ms = started_ms
                state.last_stats = stats
                state.pulled_total += stats.pulled
                state.pushed_total += stats.pushed
                self.repaired_records += stats.pulled + stats.pushed
                if stats.pulled or stats.pushed:
                    log.info(
                        "anti-entropy with %s: %d buckets differed, pulled %d, pushed %d in %.2fs",
                        peer_id,
                        stats.buckets_differing,
                        stats.pulled,
                        stats.pushed,
                        stats.duration_s,
                    )
                if self._on_synced is not None:
                    self._on_synced(peer_id, stats)
