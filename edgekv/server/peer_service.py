"""The peer gRPC service (edgekv.v1.Replication): the receiving side of replication.

Check the request, call the engine, answer. Every request names its sender
(PeerHello); a node refuses peers of another cluster or unknown node ids.
Applying is last-writer-wins and idempotent (Engine.apply_many), so batches
may arrive twice or out of order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection

import grpc

from edgekv.errors import EdgeKVError, InvalidArgument, PermissionDenied
from edgekv.limits import DEFAULT_MAX_MESSAGE_BYTES
from edgekv.replication.paging import bucket_page, record_page
from edgekv.server.status import grpc_errors, grpc_stream_errors
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

MAX_LIST_BUCKETS = 4096
MAX_FETCH_KEYS = 10_000


class PeerService(replication_pb2_grpc.ReplicationServicer):
    """Serves log shipping, heartbeats and anti-entropy to the other nodes."""

    def __init__(
        self,
        engine: Engine,
        *,
        node_id: str,
        region: str,
        cluster: str,
        known_nodes: Collection[str],
        may_hold: Callable[[bytes], bool],
        page_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._engine = engine
        # The byte budget of one ListBuckets or FetchRecords answer (paging.py).
        self._page_bytes = page_bytes
        self._node_id = node_id
        self._region = region
        self._cluster = cluster
        self._known = frozenset(known_nodes)
        # Defence in depth for data residency: never apply a key this node's
        # region may not hold, whatever a (misconfigured) peer sends.
        self._may_hold = may_hold
        self.refused_records = 0
        # origin id -> (through_seq, origin_last_seq, sent_at_ms) of the last batch.
        self.inbound: dict[str, tuple[int, int, int]] = {}

    def _check_hello(
        self, hello: replication_pb2.PeerHello, context: grpc.aio.ServicerContext
    ) -> str:
        if hello.cluster != self._cluster:
            raise InvalidArgument(
                f"peer {hello.node_id!r} belongs to cluster {hello.cluster!r}; this node is in "
                f"{self._cluster!r}"
            )
        if hello.node_id not in self._known or hello.node_id == self._node_id:
            raise InvalidArgument(f"peer {hello.node_id!r} is not a node of this cluster file")
        # Under mutual TLS the certificate, not the message, says who is calling:
        # a node's certificate cannot be used to speak for another node.
        names = (context.auth_context() or {}).get("x509_common_name")
        if names and hello.node_id.encode() not in names:
            shown = ", ".join(n.decode("utf-8", "replace") for n in names)
            raise PermissionDenied(
                f"peer says it is {hello.node_id!r} but its certificate is for {shown}"
            )
        return hello.node_id

    def _apply(self, pairs: list[tuple[bytes, bytes]]) -> int:
        allowed = [(k, r) for k, r in pairs if self._may_hold(k)]
        if len(allowed) != len(pairs):
            self.refused_records += len(pairs) - len(allowed)
            log.warning("refused %d records this region may not hold", len(pairs) - len(allowed))
        return self._engine.apply_many(allowed) if allowed else 0

    @grpc_stream_errors
    async def Replicate(
        self,
        request_iterator: AsyncIterator[replication_pb2.ReplicateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[replication_pb2.ReplicateAck]:
        origin = ""
        try:
            async for request in request_iterator:
                if not origin:
                    origin = self._check_hello(request.hello, context)
                    continue  # the hello message carries no entries and gets no ack
                applied = 0
                if request.entries:
                    applied = self._apply([(e.key, e.record) for e in request.entries])
                self.inbound[origin] = (
                    request.through_seq,
                    request.origin_last_seq,
                    request.sent_at_ms,
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
        self._check_hello(request.hello, context)
        segments = self._engine.digests.segment_digests(request.placement)
        buckets: list[int] = []
        for segment in request.segments:
            buckets += self._engine.digests.bucket_digests(request.placement, segment)
        return replication_pb2.DigestResponse(segment_digests=segments, bucket_digests=buckets)

    @grpc_errors
    async def ListBuckets(
        self, request: replication_pb2.ListBucketsRequest, context: grpc.aio.ServicerContext
    ) -> replication_pb2.ListBucketsResponse:
        self._check_hello(request.hello, context)
        if len(request.buckets) > MAX_LIST_BUCKETS:
            raise InvalidArgument(
                f"{len(request.buckets)} buckets requested; the limit is {MAX_LIST_BUCKETS}"
            )
        digests = self._engine.digests
        placement = request.placement
        page = bucket_page(
            lambda bucket, after: digests.iter_bucket(placement, bucket, after),
            request.buckets,
            request.after_key,
            self._page_bytes,
        )
        return replication_pb2.ListBucketsResponse(
            entries=[
                replication_pb2.KeyVersion(key=key, timestamp=ts, origin=origin)
                for key, ts, origin in page.entries
            ],
            truncated=page.truncated,
            resume_index=page.resume_index if page.truncated else 0,
            resume_after_key=page.resume_after_key,
        )

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
        records, end = record_page(self._engine.records, keys, 0, self._page_bytes)
        log.debug("served %d records to %s", len(records), requester)
        return replication_pb2.RecordBatch(
            records=[replication_pb2.KeyRecord(key=k, record=r) for k, r in records],
            resume_index=end if end < len(keys) else 0,
        )

    @grpc_errors
    async def PushRecords(
        self, request: replication_pb2.RecordBatch, context: grpc.aio.ServicerContext
    ) -> replication_pb2.PushRecordsResponse:
        self._check_hello(request.hello, context)
        # A page of anti-entropy repair (up to page_bytes) is applied on a worker
        # thread, so reads on the loop keep answering while a node is repaired.
        applied = await asyncio.to_thread(self._apply, [(r.key, r.record) for r in request.records])
        return replication_pb2.PushRecordsResponse(applied=applied)
