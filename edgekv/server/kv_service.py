"""The public KV gRPC service: check the request, call the request layer, build the response.

Each method decodes its protobuf request into plain values and a ``Call``
(principal, forwarding header, deadline), calls the node's ``Coordinator`` and
encodes the plain result; ``grpc_errors`` turns any EdgeKVError into its status.
Rules (auth, routing, fan-out, write paths) live in the coordinator, so every
front door shares them. Handlers are ``async def``: a plain function would run
on a thread pool, one thread hop per call (performance-notes.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import grpc

from edgekv.cluster.routing import FORWARDED_BY
from edgekv.coordinator import Call, Coordinator
from edgekv.errors import InvalidArgument
from edgekv.principal import ANYONE, AUTHORIZATION
from edgekv.server.auth import Authorizer
from edgekv.server.status import grpc_errors, grpc_stream_errors
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.storage.record import Version
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

_GetResponse = kv_pb2.GetResponse
_KeyResult = kv_pb2.KeyResult
_Version = common_pb2.Version


class KVService(kv_pb2_grpc.KVServicer):
    """gRPC door of one node's request layer.

    ``auth`` None means auth is disabled (local development only): every call
    then runs as ``ANYONE``.
    """

    def __init__(self, coordinator: Coordinator, auth: Authorizer | None = None) -> None:
        self._kv = coordinator
        self._auth = auth
        self._node_id = coordinator.node_id
        self._not_found = _GetResponse(found=False, served_by=coordinator.node_id)

    def _call(self, context: grpc.aio.ServicerContext) -> Call:
        """Authenticate the caller and read what the request layer needs from metadata."""
        credentials = forwarded_by = None
        for key, value in context.invocation_metadata() or ():  # the first of each counts
            if key == AUTHORIZATION and credentials is None:
                credentials = value if isinstance(value, str) else value.decode("latin-1")
            elif key == FORWARDED_BY and forwarded_by is None:
                forwarded_by = str(value)
        auth = self._auth
        principal = ANYONE if auth is None else auth.authenticate_header(credentials)
        return Call(principal, credentials, forwarded_by, context.time_remaining)

    @grpc_errors
    async def Get(
        self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.GetResponse:
        result = await self._kv.get(request.key, self._call(context))
        found = result.found
        if found is None:
            if result.served_by == self._node_id:
                return self._not_found
            return _GetResponse(found=False, served_by=result.served_by)
        value, timestamp, origin, expires_at_ms = found
        return _GetResponse(
            found=True,
            value=value,
            version=_Version(timestamp=timestamp, origin=origin),
            served_by=result.served_by,
            expires_at_ms=expires_at_ms,
        )

    @grpc_errors
    async def BatchGet(
        self, request: kv_pb2.BatchGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.BatchGetResponse:
        keys = list(request.keys)
        result = await self._kv.get_many(keys, self._call(context))
        served_by = result.served_by
        read_by = result.read_by or [served_by] * len(keys)
        results: list[kv_pb2.KeyResult] = []
        append = results.append
        for key, found, reader in zip(keys, result.found, read_by, strict=True):
            other = "" if reader == served_by else reader
            if found is None:
                append(_KeyResult(key=key, served_by=other))
            else:
                value, timestamp, origin, expires_at_ms = found
                append(
                    _KeyResult(
                        key=key,
                        found=True,
                        value=value,
                        version=_Version(timestamp=timestamp, origin=origin),
                        expires_at_ms=expires_at_ms,
                        served_by=other,
                    )
                )
        return kv_pb2.BatchGetResponse(results=results, served_by=served_by)

    @grpc_errors
    async def Put(
        self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.PutResponse:
        ack = await self._kv.put(request.key, request.value, request.ttl_ms, self._call(context))
        return kv_pb2.PutResponse(version=_version(ack.version), served_by=ack.served_by)

    @grpc_errors
    async def Delete(
        self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.DeleteResponse:
        ack = await self._kv.delete(request.key, self._call(context))
        return kv_pb2.DeleteResponse(version=_version(ack.version), served_by=ack.served_by)

    @grpc_errors
    async def Write(
        self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.WriteResponse:
        call = self._call(context)
        ops = [_write_op(i, op) for i, op in enumerate(request.ops)]
        ack = await self._kv.write(ops, call)
        return kv_pb2.WriteResponse(version=_version(ack.version), served_by=ack.served_by)

    @grpc_errors
    async def Scan(
        self, request: kv_pb2.ScanRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ScanResponse:
        page = await self._kv.scan(
            self._call(context),
            prefix=request.prefix,
            start=request.start,
            end=request.end,
            page_token=request.page_token,
            limit=request.limit,
            keys_only=request.keys_only,
        )
        served_by = page.served_by
        held_by = page.held_by or [served_by] * len(page.items)
        return kv_pb2.ScanResponse(
            items=[
                kv_pb2.KeyValue(
                    key=item.key,
                    value=item.value,
                    version=_Version(timestamp=item.timestamp, origin=item.origin),
                    expires_at_ms=item.expires_at_ms,
                    served_by="" if holder == served_by else holder,
                )
                for item, holder in zip(page.items, held_by, strict=True)
            ],
            next_page_token=page.next_page_token,
            served_by=served_by,
        )

    @grpc_stream_errors
    async def Watch(
        self, request: kv_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[kv_pb2.WatchEvent, None]:
        events = self._kv.watch(request.prefix, self._call(context))
        async with contextlib.aclosing(events):  # unsubscribe as soon as the call ends
            async for event in events:
                yield kv_pb2.WatchEvent(
                    key=event.key,
                    value=event.value,
                    version=_Version(timestamp=event.timestamp, origin=event.origin),
                    deleted=event.deleted,
                    expires_at_ms=event.expires_at_ms,
                    local=event.local,
                    served_by=event.served_by,
                )


def _version(version: Version) -> common_pb2.Version:
    return _Version(timestamp=version.timestamp, origin=version.origin)


def _write_op(index: int, op: kv_pb2.WriteOp) -> PutOp | DeleteOp:
    kind = op.WhichOneof("op")
    if kind == "put":
        return PutOp(op.put.key, op.put.value, op.put.ttl_ms)
    if kind == "delete":
        return DeleteOp(op.delete.key)
    raise InvalidArgument(f"ops[{index}] sets neither put nor delete")
