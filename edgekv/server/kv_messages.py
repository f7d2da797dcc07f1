"""The KV service in protobuf messages, whatever the transport carries them.

:class:`KVMessages` turns a decoded ``edgekv.v1`` request and a :class:`Call`
into a call of the request layer, and its plain result into the response
message. Every door that speaks the ``edgekv.v1.KV`` messages uses it: the gRPC
servicer (server/kv_service.py) and the Connect / gRPC-Web door (edgekv/http/),
so a field is read and written in one place. Authentication (building the
``Call``) and the error edge stay with each door; rules stay in the coordinator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from edgekv.coordinator import Call, Coordinator
from edgekv.errors import InvalidArgument
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.storage.record import Version
from edgekv.v1 import common_pb2, kv_pb2

_GetResponse = kv_pb2.GetResponse
_KeyResult = kv_pb2.KeyResult
_Version = common_pb2.Version


class KVMessages:
    """``edgekv.v1.KV`` requests in, responses out, through one node's coordinator.

    Stateless apart from the coordinator; may be shared by any number of doors
    and concurrent calls on the node's event loop. Methods raise EdgeKVError.
    """

    __slots__ = ("_kv", "_node_id", "_not_found", "node_id")

    def __init__(self, coordinator: Coordinator) -> None:
        self._kv = coordinator
        self._node_id = self.node_id = coordinator.node_id
        self._not_found = _GetResponse(found=False, served_by=coordinator.node_id)

    async def get(self, request: kv_pb2.GetRequest, call: Call) -> kv_pb2.GetResponse:
        result = await self._kv.get(request.key, call)
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

    async def batch_get(
        self, request: kv_pb2.BatchGetRequest, call: Call
    ) -> kv_pb2.BatchGetResponse:
        keys = list(request.keys)
        result = await self._kv.get_many(keys, call)
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

    async def put(self, request: kv_pb2.PutRequest, call: Call) -> kv_pb2.PutResponse:
        ack = await self._kv.put(request.key, request.value, request.ttl_ms, call)
        return kv_pb2.PutResponse(version=version_message(ack.version), served_by=ack.served_by)

    async def delete(self, request: kv_pb2.DeleteRequest, call: Call) -> kv_pb2.DeleteResponse:
        ack = await self._kv.delete(request.key, call)
        return kv_pb2.DeleteResponse(version=version_message(ack.version), served_by=ack.served_by)

    async def write(self, request: kv_pb2.WriteRequest, call: Call) -> kv_pb2.WriteResponse:
        ops = [_write_op(i, op) for i, op in enumerate(request.ops)]
        ack = await self._kv.write(ops, call)
        return kv_pb2.WriteResponse(version=version_message(ack.version), served_by=ack.served_by)

    async def scan(self, request: kv_pb2.ScanRequest, call: Call) -> kv_pb2.ScanResponse:
        page = await self._kv.scan(
            call,
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
            watch_token=page.watch_token,
        )

    async def watch(
        self, request: kv_pb2.WatchRequest, call: Call
    ) -> AsyncGenerator[kv_pb2.WatchEvent, None]:
        """Watch events until the caller stops iterating (then the subscription ends)."""
        events = self._kv.watch(
            request.prefix, call, request.resume_token, request.initial_progress
        )
        async with contextlib.aclosing(events):  # unsubscribe as soon as the call ends
            async for event in events:
                if event.progress:
                    yield kv_pb2.WatchEvent(
                        served_by=event.served_by, resume_token=event.resume_token, progress=True
                    )
                    continue
                yield kv_pb2.WatchEvent(
                    key=event.key,
                    value=event.value,
                    version=_Version(timestamp=event.timestamp, origin=event.origin),
                    deleted=event.deleted,
                    expires_at_ms=event.expires_at_ms,
                    local=event.local,
                    served_by=event.served_by,
                    resume_token=event.resume_token,
                )


def version_message(version: Version) -> common_pb2.Version:
    return _Version(timestamp=version.timestamp, origin=version.origin)


def _write_op(index: int, op: kv_pb2.WriteOp) -> PutOp | DeleteOp:
    kind = op.WhichOneof("op")
    if kind == "put":
        return PutOp(op.put.key, op.put.value, op.put.ttl_ms)
    if kind == "delete":
        return DeleteOp(op.delete.key)
    raise InvalidArgument(f"ops[{index}] sets neither put nor delete")
