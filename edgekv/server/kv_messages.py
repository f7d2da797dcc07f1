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
from typing import Any

from edgekv.consistency import token_of_versions
from edgekv.coordinator import Call, Coordinator, GetResult, WriteAck
from edgekv.errors import InvalidArgument
from edgekv.replication.receipts import AwaitSpec
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.storage.conditions import IF_ABSENT, Condition
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

    __slots__ = ("_kv", "_node_id", "node_id")

    def __init__(self, coordinator: Coordinator) -> None:
        self._kv = coordinator
        self._node_id = self.node_id = coordinator.node_id

    async def get(self, request: kv_pb2.GetRequest, call: Call) -> kv_pb2.GetResponse:
        if request.consistency or request.session_token:
            _read_level(request, call)
        response = _GetResponse()
        self._fill_get(await self._kv.get(request.key, call), response)
        return response

    def get_now(self, request: kv_pb2.GetRequest, call: Call, out: kv_pb2.GetResponse) -> bool:
        """Fill ``out`` with ``get``'s response when the coordinator has it without
        waiting (a LOCAL read held here: Coordinator.get_now) and return True; else
        False, ``out`` untouched. Changes nothing on ``call``. ``out`` may be a field of
        another message (KV.Stream's answer): filled in place, it is never copied."""
        if request.consistency or request.session_token:
            return False
        result = self._kv.get_now(request.key, call)
        if result is None:
            return False
        self._fill_get(result, out)
        return True

    def get_key_now(self, key: bytes, call: Call) -> GetResult | None:
        """The result of a get that sets only ``key`` (a LOCAL read) when the coordinator
        has it without waiting, else None: KV.Stream's get read off the wire
        (native.stream_plain_get) and answered without protobuf objects."""
        return self._kv.get_now(key, call)

    @staticmethod
    def _fill_get(result: GetResult, out: kv_pb2.GetResponse) -> None:
        out.SetInParent()  # present even when every field is its default
        out.served_by = result.served_by
        if result.session_token:  # a level or a token was asked for: LOCAL pays nothing
            out.session_token = result.session_token
        found = result.found
        if found is None:
            return
        value, timestamp, origin, expires_at_ms = found
        out.found = True
        out.value = value
        version = out.version
        version.timestamp = timestamp
        version.origin = origin
        if expires_at_ms:
            out.expires_at_ms = expires_at_ms

    async def batch_get(
        self, request: kv_pb2.BatchGetRequest, call: Call
    ) -> kv_pb2.BatchGetResponse:
        keys = list(request.keys)
        if request.consistency or request.session_token:
            _read_level(request, call)
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
        return kv_pb2.BatchGetResponse(
            results=results, served_by=served_by, session_token=result.session_token
        )

    async def put(self, request: kv_pb2.PutRequest, call: Call) -> kv_pb2.PutResponse:
        condition = condition_of(request.condition) if request.HasField("condition") else None
        awaited = await_spec(request)
        ack = await self._kv.put(
            request.key, request.value, request.ttl_ms, call, awaited, condition
        )
        return kv_pb2.PutResponse(**write_fields(ack))

    async def delete(self, request: kv_pb2.DeleteRequest, call: Call) -> kv_pb2.DeleteResponse:
        condition = condition_of(request.condition) if request.HasField("condition") else None
        ack = await self._kv.delete(request.key, call, await_spec(request), condition)
        return kv_pb2.DeleteResponse(**write_fields(ack))

    async def write(self, request: kv_pb2.WriteRequest, call: Call) -> kv_pb2.WriteResponse:
        ops = [_write_op(i, op) for i, op in enumerate(request.ops)]
        ack = await self._kv.write(ops, call, await_replicas=await_spec(request))
        return kv_pb2.WriteResponse(**write_fields(ack))

    async def scan(self, request: kv_pb2.ScanRequest, call: Call) -> kv_pb2.ScanResponse:
        if request.consistency or request.session_token:
            _read_level(request, call)
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
            session_token=page.session_token,
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


def _read_level(
    request: kv_pb2.GetRequest | kv_pb2.BatchGetRequest | kv_pb2.ScanRequest, call: Call
) -> None:
    """The request's read level and session token, onto the call (coordinator/session.py)."""
    call.consistency = request.consistency
    call.session_token = request.session_token


def await_spec(
    request: kv_pb2.PutRequest | kv_pb2.DeleteRequest | kv_pb2.WriteRequest,
) -> AwaitSpec | None:
    """The request's ``await_replicas`` as plain values (None when absent)."""
    if not request.HasField("await_replicas"):
        return None
    a = request.await_replicas
    return AwaitSpec(a.count, tuple(a.regions), a.timeout_ms)


def write_fields(ack: WriteAck) -> dict[str, Any]:
    """The fields every write response shares: version, server, token, receipts."""
    version = ack.version
    fields: dict[str, Any] = {
        "version": _Version(timestamp=version.timestamp, origin=version.origin),
        "served_by": ack.served_by,
        "session_token": token_of_versions(((version.timestamp, version.origin),)),
    }
    if ack.receipts or ack.not_applied_by:
        fields["receipts"] = [
            common_pb2.ReplicaReceipt(
                node_id=r.node_id, region=r.region, applied_after_ms=r.applied_after_ms
            )
            for r in ack.receipts
        ]
        fields["not_applied_by"] = list(ack.not_applied_by)
    return fields


def _write_op(index: int, op: kv_pb2.WriteOp) -> PutOp | DeleteOp:
    kind = op.WhichOneof("op")
    if kind == "put":
        put = op.put
        condition = condition_of(put.condition) if put.HasField("condition") else None
        return PutOp(put.key, put.value, put.ttl_ms, condition)
    if kind == "delete":
        cond = condition_of(op.delete.condition) if op.delete.HasField("condition") else None
        return DeleteOp(op.delete.key, cond)
    raise InvalidArgument(f"ops[{index}] sets neither put nor delete")


def condition_of(message: common_pb2.Condition) -> Condition:
    """A request's condition; InvalidArgument when it sets no check."""
    check = message.WhichOneof("check")
    if check == "if_version":
        return Condition(
            if_version=Version(message.if_version.timestamp, message.if_version.origin)
        )
    if check == "if_absent" and message.if_absent:
        return IF_ABSENT
    raise InvalidArgument("condition sets no check: set if_absent=true or if_version")
