"""Forwarding: serving part of a request at the nearest node allowed to hold its keys.

The request layer calls a :class:`Forwarder` with plain arguments and gets plain
results back, whatever carries the call. :class:`GrpcForwarder` is the one nodes
use: it calls the target's public KV service over gRPC through the ``Router``
(nearest allowed node first, failover to the next), with the caller's
credentials and an ``edgekv-forwarded-by`` header so the target never forwards
it again. :class:`DirectForwarder` calls other nodes' request layers in the same
process, for tests and simulations that need no sockets.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from edgekv.cluster.routing import FORWARDED_BY, Router
from edgekv.condition_status import error_from_rpc_error
from edgekv.coordinator.call import Call
from edgekv.coordinator.results import BatchGetResult, ChangeEvent, GetResult, ScanResult, WriteAck
from edgekv.errors import Unavailable, relayed_status
from edgekv.principal import AUTHORIZATION
from edgekv.replication.receipts import AwaitSpec, Receipt
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.storage.conditions import Condition
from edgekv.storage.record import ScanItem, Version
from edgekv.v1 import common_pb2, kv_pb2

_T = TypeVar("_T")


class Forwarder(Protocol):
    """Serves a request at the nearest reachable node allowed to hold ``route_key``.

    Every method raises the serving node's own EdgeKVError, or Unavailable
    naming the nodes tried when none of them answers. ``targets`` names the nodes
    to try, in order, instead of the nearest allowed ones (SESSION reads: the
    token's origins first; a homed key: its home alone, coordinator/home.py);
    the call's level and token travel with it.
    """

    async def get(
        self, key: bytes, call: Call, *, targets: Sequence[str] | None = None
    ) -> GetResult: ...

    async def get_many(
        self, keys: Sequence[bytes], call: Call, *, targets: Sequence[str] | None = None
    ) -> BatchGetResult: ...

    async def write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        route_key: bytes,
        call: Call,
        *,
        await_replicas: AwaitSpec | None = None,
        targets: Sequence[str] | None = None,
    ) -> WriteAck: ...

    async def scan(
        self,
        start: bytes,
        end: bytes,
        limit: int,
        keys_only: bool,
        route_key: bytes,
        call: Call,
        *,
        targets: Sequence[str] | None = None,
    ) -> ScanResult: ...

    def watch(
        self,
        prefix: bytes,
        route_key: bytes,
        call: Call,
        resume_token: bytes = b"",
        initial_progress: bool = False,
    ) -> AsyncIterator[ChangeEvent]: ...


class RequestLayer(Protocol):
    """What a node's request layer (``Coordinator``) offers to calls forwarded to it."""

    async def get(self, key: bytes, call: Call) -> GetResult: ...

    async def get_many(self, keys: Sequence[bytes], call: Call) -> BatchGetResult: ...

    async def write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        call: Call,
        *,
        await_replicas: AwaitSpec | None = None,
    ) -> WriteAck: ...

    async def scan(
        self,
        call: Call,
        *,
        prefix: bytes = b"",
        start: bytes = b"",
        end: bytes = b"",
        page_token: bytes = b"",
        limit: int = 0,
        keys_only: bool = False,
    ) -> ScanResult: ...

    def watch(
        self, prefix: bytes, call: Call, resume_token: bytes = b"", initial_progress: bool = False
    ) -> AsyncGenerator[ChangeEvent, None]: ...


class GrpcForwarder:
    """Forwarding over gRPC to other nodes' client ports. Runs on the node's loop."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def _forward(
        self,
        method: str,
        request: Any,
        route_key: bytes,
        call: Call,
        *,
        idempotent: bool = True,
        targets: Sequence[str] | None = None,
    ) -> Any:
        try:
            return await self._router.forward(
                method,
                request,
                route_key,
                timeout_s=call.timeout_s(),
                targets=targets,
                credentials=call.credentials,
                idempotent=idempotent,
            )
        except grpc.aio.AioRpcError as exc:  # the serving node's own answer
            raise error_from_rpc_error(exc) from None

    async def get(
        self, key: bytes, call: Call, *, targets: Sequence[str] | None = None
    ) -> GetResult:
        request = kv_pb2.GetRequest(
            key=key, consistency=_level(call), session_token=call.session_token
        )
        reply = await self._forward("Get", request, key, call, targets=targets)
        if not reply.found:
            return GetResult(None, reply.served_by)
        found = (reply.value, reply.version.timestamp, reply.version.origin, reply.expires_at_ms)
        return GetResult(found, reply.served_by)

    async def get_many(
        self, keys: Sequence[bytes], call: Call, *, targets: Sequence[str] | None = None
    ) -> BatchGetResult:
        request = kv_pb2.BatchGetRequest(
            keys=keys, consistency=_level(call), session_token=call.session_token
        )
        reply = await self._forward("BatchGet", request, keys[0], call, targets=targets)
        found = [
            (r.value, r.version.timestamp, r.version.origin, r.expires_at_ms) if r.found else None
            for r in reply.results
        ]
        if len(found) != len(keys):
            raise Unavailable(
                f"node {reply.served_by} answered {len(found)} results for {len(keys)} keys"
            )
        read_by = [r.served_by or reply.served_by for r in reply.results]
        return BatchGetResult(found, reply.served_by, read_by)

    async def write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        route_key: bytes,
        call: Call,
        *,
        await_replicas: AwaitSpec | None = None,
        targets: Sequence[str] | None = None,
    ) -> WriteAck:
        awaited = _await_message(await_replicas)
        if len(ops) == 1:  # a single op goes as the Put or Delete the client sent
            op = ops[0]
            condition = condition_message(op.condition)
            if isinstance(op, PutOp):
                request: Any = kv_pb2.PutRequest(
                    key=op.key,
                    value=op.value,
                    ttl_ms=op.ttl_ms,
                    condition=condition,
                    await_replicas=awaited,
                )
                method = "Put"
            else:
                request = kv_pb2.DeleteRequest(
                    key=op.key, condition=condition, await_replicas=awaited
                )
                method = "Delete"
        else:
            request = kv_pb2.WriteRequest(ops=[_write_op(op) for op in ops], await_replicas=awaited)
            method = "Write"
        reply = await self._forward(
            method, request, route_key, call, idempotent=False, targets=targets
        )
        return WriteAck(
            Version(reply.version.timestamp, reply.version.origin),
            reply.served_by,
            tuple(Receipt(r.node_id, r.region, r.applied_after_ms) for r in reply.receipts),
            tuple(reply.not_applied_by),
        )

    async def scan(
        self,
        start: bytes,
        end: bytes,
        limit: int,
        keys_only: bool,
        route_key: bytes,
        call: Call,
        *,
        targets: Sequence[str] | None = None,
    ) -> ScanResult:
        request = kv_pb2.ScanRequest(
            start=start,
            end=end,
            limit=limit,
            keys_only=keys_only,
            consistency=_level(call),
            session_token=call.session_token,
        )
        reply = await self._forward("Scan", request, route_key, call, targets=targets)
        items = [
            ScanItem(i.key, i.value, i.version.timestamp, i.version.origin, i.expires_at_ms)
            for i in reply.items
        ]
        held_by = [i.served_by or reply.served_by for i in reply.items]
        return ScanResult(
            items, reply.next_page_token, reply.served_by, held_by, watch_token=reply.watch_token
        )

    async def watch(
        self,
        prefix: bytes,
        route_key: bytes,
        call: Call,
        resume_token: bytes = b"",
        initial_progress: bool = False,
    ) -> AsyncIterator[ChangeEvent]:
        """Relay a Watch; when its node goes away, resume at the next one from the last token."""
        router = self._router
        metadata: tuple[tuple[str, str], ...] = ((FORWARDED_BY, router.spec.id),)
        if call.credentials is not None:
            metadata += ((AUTHORIZATION, call.credentials),)
        tried = []
        for node_id in router.candidates(route_key):
            tried.append(node_id)
            request = kv_pb2.WatchRequest(
                prefix=prefix, resume_token=resume_token, initial_progress=initial_progress
            )
            stream = router.stub(node_id).Watch(request, metadata=metadata)
            try:
                async for e in stream:
                    resume_token = e.resume_token or resume_token
                    yield ChangeEvent(
                        e.key, e.value, e.version.timestamp, e.version.origin, e.deleted,
                        e.expires_at_ms, e.local, e.served_by, e.resume_token, e.progress,
                    )  # fmt: skip
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise relayed_status(exc.code(), exc.details() or "") from None
            finally:
                stream.cancel()
        raise router.unavailable(route_key, tried, "watch")


class DirectForwarder:
    """Forwarding to request layers in this process: same routing, failover and errors.

    ``peers`` maps node ids to their coordinators (filled in as nodes are built);
    a node missing from it counts as unreachable, as does one that answers
    Unavailable, and the next candidate is tried.
    """

    def __init__(self, router: Router, peers: Mapping[str, RequestLayer]) -> None:
        self._router = router
        self._peers = peers

    async def _serve(
        self,
        route_key: bytes,
        serve: Callable[[RequestLayer], Awaitable[_T]],
        targets: Sequence[str] | None = None,
    ) -> _T:
        tried: list[str] = []
        last_error = "not in this process"
        for node_id in targets if targets is not None else self._router.candidates(route_key):
            tried.append(node_id)
            peer = self._peers.get(node_id)
            if peer is None:
                continue
            try:
                return await serve(peer)
            except Unavailable as exc:
                last_error = f"{node_id}: {exc}"
        raise self._router.unavailable(route_key, tried, last_error)

    def _mark(self, call: Call) -> Call:
        return call.forwarded(self._router.spec.id)

    async def get(
        self, key: bytes, call: Call, *, targets: Sequence[str] | None = None
    ) -> GetResult:
        return await self._serve(key, lambda peer: peer.get(key, self._mark(call)), targets)

    async def get_many(
        self, keys: Sequence[bytes], call: Call, *, targets: Sequence[str] | None = None
    ) -> BatchGetResult:
        return await self._serve(
            keys[0], lambda peer: peer.get_many(keys, self._mark(call)), targets
        )

    async def write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        route_key: bytes,
        call: Call,
        *,
        await_replicas: AwaitSpec | None = None,
        targets: Sequence[str] | None = None,
    ) -> WriteAck:
        return await self._serve(
            route_key,
            lambda peer: peer.write(ops, self._mark(call), await_replicas=await_replicas),
            targets,
        )

    async def scan(
        self,
        start: bytes,
        end: bytes,
        limit: int,
        keys_only: bool,
        route_key: bytes,
        call: Call,
        *,
        targets: Sequence[str] | None = None,
    ) -> ScanResult:
        return await self._serve(
            route_key,
            lambda peer: peer.scan(
                self._mark(call), start=start, end=end, limit=limit, keys_only=keys_only
            ),
            targets,
        )

    async def watch(
        self,
        prefix: bytes,
        route_key: bytes,
        call: Call,
        resume_token: bytes = b"",
        initial_progress: bool = False,
    ) -> AsyncIterator[ChangeEvent]:
        for node_id in self._router.candidates(route_key):
            peer = self._peers.get(node_id)
            if peer is not None:
                events = peer.watch(prefix, self._mark(call), resume_token, initial_progress)
                async with contextlib.aclosing(events):  # the peer's subscription ends with ours
                    async for event in events:
                        yield event
                return
        raise self._router.unavailable(route_key, [], "not in this process")


def _level(call: Call) -> Any:
    """The call's read level as the request field takes it (an edgekv.v1.Consistency value)."""
    return call.consistency


def _await_message(spec: AwaitSpec | None) -> common_pb2.AwaitReplicas | None:
    if not spec:
        return None
    return common_pb2.AwaitReplicas(
        count=spec.count, regions=spec.regions, timeout_ms=spec.timeout_ms
    )


def _write_op(op: PutOp | DeleteOp) -> kv_pb2.WriteOp:
    condition = condition_message(op.condition)
    if isinstance(op, PutOp):
        put = kv_pb2.PutOp(key=op.key, value=op.value, ttl_ms=op.ttl_ms, condition=condition)
        return kv_pb2.WriteOp(put=put)
    return kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=op.key, condition=condition))


def condition_message(condition: Condition | None) -> common_pb2.Condition | None:
    """The wire form of a write's condition (None: no condition)."""
    if condition is None:
        return None
    if condition.if_version is not None:
        timestamp, origin = condition.if_version
        return common_pb2.Condition(
            if_version=common_pb2.Version(timestamp=timestamp, origin=origin)
        )
    return common_pb2.Condition(if_absent=True)
