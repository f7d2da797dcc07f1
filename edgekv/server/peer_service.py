"""The peer gRPC service (edgekv.v1.Replication): the receiving side of replication.

Check the request, call the engine, answer. Every request names its sender
(PeerHello), and every call proves it (server/peer_auth.py: mutual TLS or the
cluster peer secret); a node refuses peers of another cluster, unknown node
ids and unproven claims. The caller's region comes from its proven id, and a
call for a placement or keys that region may not hold is refused with
PERMISSION_DENIED; received records this node's region may not hold are
dropped. Both are counted (replication/refusals.py). Applying is
last-writer-wins and idempotent (Engine.apply_many), so batches may arrive
twice or out of order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence

import grpc

from edgekv.cluster.placement import PlacementRules
from edgekv.errors import EdgeKVError, InvalidArgument, PermissionDenied, Unauthenticated
from edgekv.limits import DEFAULT_MAX_MESSAGE_BYTES
from edgekv.replication.frontier import AppliedFrontier
from edgekv.replication.handoff import held_keys
from edgekv.replication.listing import bucket_page_in_steps, listing_answer
from edgekv.replication.pacer import RepairPacer, apply_paced
from edgekv.replication.paging import listing_cost, record_cost, record_page
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.syncturns import SyncTurns
from edgekv.server.peer_auth import PeerAuthenticator
from edgekv.server.status import grpc_errors, grpc_stream_errors
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

MAX_LIST_BUCKETS = 4096
MAX_FETCH_KEYS = 10_000


class PeerService(replication_pb2_grpc.ReplicationServicer):
    """Serves log shipping, heartbeats and anti-entropy to the other nodes.

    ``node_regions`` maps every node id of the cluster file to its region.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        node_id: str,
        cluster: str,
        node_regions: Mapping[str, str],
        placement: PlacementRules,
        authenticator: PeerAuthenticator,
        refusals: PeerRefusals,
        page_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        pacer: RepairPacer | None = None,
        frontier: AppliedFrontier | None = None,
        turns: SyncTurns | None = None,
    ) -> None:
        self._engine = engine
        # Which peers are syncing with this node (its own syncs give way: syncturns.py).
        self._turns = turns or SyncTurns(node_id)
        # Advanced after each applied batch, in stream order (SESSION reads wait on it).
        self._frontier = frontier
        # The byte budget of one ListBuckets or FetchRecords answer (paging.py).
        self._page_bytes = page_bytes
        # Anti-entropy bytes served or applied here share the node's budget (pacer.py).
        self._pacer = pacer or RepairPacer()
        self._node_id = node_id
        self._region = node_regions[node_id]
        self._cluster = cluster
        self._node_regions = dict(node_regions)
        self._placement = placement
        # Placements each region may hold, for the digest and listing calls.
        self._placements_of = {
            region: frozenset(placement.placements_shared_by([region]))
            for region in set(node_regions.values())
        }
        self._auth = authenticator
        self.refusals = refusals
        # origin id -> (through_seq, origin_last_seq, sent_at_ms) of the last batch.
        self.inbound: dict[str, tuple[int, int, int]] = {}

    def _check_hello(
        self, hello: replication_pb2.PeerHello, context: grpc.aio.ServicerContext
    ) -> str:
        """The caller's node id, proven (module docstring); refusals are counted.

        The proof comes first: a caller that proves nothing learns nothing, not
        even this node's cluster name or which node ids it knows.
        """
        try:
            self._auth.verify(hello.node_id, context)
        except Unauthenticated:
            self.refusals.call("unauthenticated")
            raise
        except PermissionDenied:
            self.refusals.call("identity")
            raise
        if hello.cluster != self._cluster:
            self.refusals.call("unknown_peer")
            raise InvalidArgument(
                f"peer {hello.node_id!r} belongs to cluster {hello.cluster!r}; this node is in "
                f"{self._cluster!r}"
            )
        if hello.node_id not in self._node_regions or hello.node_id == self._node_id:
            self.refusals.call("unknown_peer")
            raise InvalidArgument(f"peer {hello.node_id!r} is not a node of this cluster file")
        return hello.node_id

    def _check_placement(self, caller: str, placement: bytes) -> None:
        region = self._node_regions[caller]
        if placement not in self._placements_of[region]:
            self.refusals.call("placement")
            log.warning("refused placement digests/listing to %s (%s)", caller, region)
            raise PermissionDenied(
                f"peer {caller!r} is in region {region!r}, which may not hold placement "
                f"{placement[:64]!r}"
            )

    def _check_keys(self, caller: str, keys: Sequence[bytes]) -> None:
        region = self._node_regions[caller]
        allows = self._placement.allows
        refused = [k for k in keys if not allows(k, region)]
        if refused:
            self.refusals.call("keys")
            log.warning(
                "refused a fetch of %d pinned keys to %s (%s)", len(refused), caller, region
            )
            raise PermissionDenied(
                f"peer {caller!r} is in region {region!r}, which may not hold {len(refused)} of "
                f"the {len(keys)} keys asked for (first: {refused[0][:64]!r})"
            )

    def _may_hold(self, key: bytes) -> bool:
        return self._placement.allows(key, self._region)

    def _budget(self, asked_bytes: int) -> int:
        """The byte budget of one answer: what the caller asked for, at most the page budget."""
        return min(asked_bytes, self._page_bytes) if asked_bytes else self._page_bytes

    def _apply(
        self, caller: str, pairs: list[tuple[bytes, bytes]], *, from_callers_region: bool = True
    ) -> int:
        # Defence in depth for data residency: never apply a key this node's
        # region may not hold, whatever a (misconfigured) peer sends, nor one
        # the sender's region may not hold (it should never have had it) --
        # except in a hand-off (from_callers_region False), where the caller
        # gives up exactly the records its region may no longer hold.
        allows, region = self._placement.allows, self._region
        allowed = [(k, r) for k, r in pairs if allows(k, region)]
        if len(allowed) != len(pairs):
            self.refusals.dropped("not_held", len(pairs) - len(allowed))
            log.warning("refused %d records this region may not hold", len(pairs) - len(allowed))
        theirs = self._node_regions[caller]
        if from_callers_region and theirs != region:
            held = len(allowed)
            allowed = [(k, r) for k, r in allowed if allows(k, theirs)]
            if len(allowed) != held:
                self.refusals.dropped("not_callers", held - len(allowed))
                log.warning("refused %d records %s may not hold", held - len(allowed), caller)
        return self._engine.apply_many(allowed, quarantine_skewed=True) if allowed else 0

    @grpc_stream_errors
    async def Replicate(
        self,
        request_iterator: AsyncIterator[replication_pb2.ReplicateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncGenerator[replication_pb2.ReplicateAck, None]:
        origin = ""
        try:
            async for request in request_iterator:
                if not origin:
                    origin = self._check_hello(request.hello, context)
                    continue  # the hello message carries no entries and gets no ack
                applied = 0
                if request.entries:
                    applied = self._apply(origin, [(e.key, e.record) for e in request.entries])
                self.inbound[origin] = (
                    request.through_seq,
                    request.origin_last_seq,
                    request.sent_at_ms,
                )
                if self._frontier is not None and request.from_seq:  # 0: an older sender
                    # A timestamp past the skew limit may be quarantined, not applied.
                    through_ts = min(request.through_timestamp, self._engine.clock.skew_limit() - 1)
                    self._frontier.on_batch(
                        origin, request.from_seq, request.through_seq, through_ts
                    )
                yield replication_pb2.ReplicateAck(acked_seq=request.through_seq, applied=applied)
        except EdgeKVError as exc:
            log.warning("replication stream from %s refused: %s", origin or "?", exc)
            raise

    @grpc_errors
    async def Heartbeat(
        self, request: replication_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> replication_pb2.HeartbeatResponse:
        self._check_hello(request.hello, context)
        return replication_pb2.HeartbeatResponse(
            node_id=self._node_id,
            region=self._region,
            last_seq=self._engine.last_seq,
            now_ms=wall_ms(),
        )

    @grpc_errors
    async def GetDigests(
        self, request: replication_pb2.DigestRequest, context: grpc.aio.ServicerContext
    ) -> replication_pb2.DigestResponse:
        caller = self._check_hello(request.hello, context)
        self._check_placement(caller, request.placement)
        segments = self._engine.digests.segment_digests(request.placement)
        buckets: list[int] = []
        for segment in request.segments:
            buckets += self._engine.digests.bucket_digests(request.placement, segment)
        return replication_pb2.DigestResponse(segment_digests=segments, bucket_digests=buckets)

    @grpc_errors
    async def ListBuckets(
        self, request: replication_pb2.ListBucketsRequest, context: grpc.aio.ServicerContext
    ) -> replication_pb2.ListBucketsResponse:
        caller = self._check_hello(request.hello, context)
        self._check_placement(caller, request.placement)
        if len(request.buckets) > MAX_LIST_BUCKETS:
            raise InvalidArgument(
                f"{len(request.buckets)} buckets requested; the limit is {MAX_LIST_BUCKETS}"
            )
        # Walked in short steps on the loop, so reads here wait for none of it (listing.py).
        page = await bucket_page_in_steps(
            self._engine.digests.bucket_reader(request.placement),
            request.buckets,
            request.after_key,
            self._budget(request.max_bytes),
        )
        await self._pacer.pace(sum(listing_cost(e) for e in page.entries))
        return await listing_answer(page)

    @grpc_errors
    async def FetchRecords(
        self, request: replication_pb2.FetchRecordsRequest, context: grpc.aio.ServicerContext
    ) -> replication_pb2.RecordBatch:
        requester = self._check_hello(request.hello, context)
        if len(request.keys) > MAX_FETCH_KEYS:
            raise InvalidArgument(
                f"{len(request.keys)} keys requested; the limit is {MAX_FETCH_KEYS}"
            )
        keys = list(request.keys)
        self._check_keys(requester, keys)
        records, end = record_page(self._engine.records, keys, 0, self._budget(request.max_bytes))
        await self._pacer.pace(sum(record_cost(k, r) for k, r in records))
        log.debug("served %d records to %s", len(records), requester)
        return replication_pb2.RecordBatch(
            records=[replication_pb2.KeyRecord(key=k, record=r) for k, r in records],
            resume_index=end if end < len(keys) else 0,
        )

    @grpc_errors
    async def PushRecords(
        self, request: replication_pb2.RecordBatch, context: grpc.aio.ServicerContext
    ) -> replication_pb2.PushRecordsResponse:
        caller = self._check_hello(request.hello, context)
        if request.records:  # the caller's sync is repairing this node (syncturns.py): as it
            self._turns.saw(caller)  # starts, so this node's own sync gives way meanwhile
        # A page of anti-entropy repair is applied in short paced slices,
        # yielding between them, so reads on the loop keep answering while a
        # node is repaired, however large the page and however many peers push.
        applied = await apply_paced(
            self._pacer,
            lambda batch: self._apply(caller, batch),
            [(r.key, r.record) for r in request.records],
        )
        return replication_pb2.PushRecordsResponse(applied=applied)

    @grpc_errors
    async def HandOff(
        self, request: replication_pb2.RecordBatch, context: grpc.aio.ServicerContext
    ) -> replication_pb2.HandOffResponse:
        """A peer gives up records it may no longer hold: keep what this region may hold.

        The caller's region is not checked against the records (it is giving
        them up, not receiving them); this node's region is, as on every apply.
        """
        caller = self._check_hello(request.hello, context)
        if len(request.records) > MAX_FETCH_KEYS:
            raise InvalidArgument(
                f"{len(request.records)} records handed off; the limit is {MAX_FETCH_KEYS}"
            )
        pairs = [(r.key, r.record) for r in request.records]
        self._apply(caller, pairs, from_callers_region=False)
        return replication_pb2.HandOffResponse(held=held_keys(self._engine, pairs, self._may_hold))
