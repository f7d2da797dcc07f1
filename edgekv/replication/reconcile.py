"""One anti-entropy sync with one peer: compare digests, exchange what differs.

For every placement group both nodes may hold: compare the 256 group digests,
then the bucket digests of differing groups, then list only differing buckets
and exchange the records whose versions differ — pulling what the peer has
newer, pushing what we have newer. Cost is proportional to the difference, not
the data size. Records move in small pages, paced in bytes per second by the
node's RepairPacer (pacer.py), so that reads at a node being repaired stay fast.
Applying is idempotent, so a sync that is cut off half-way is simply finished by
the next one. Only records this node asked for and may hold are applied,
whatever the peer sends back; the rest are dropped and counted
(replication/refusals.py). The loop that runs syncs is antientropy.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgekv.errors import EdgeKVError
from edgekv.limits import DEFAULT_MAX_MESSAGE_BYTES
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
from edgekv.storage import digest
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
