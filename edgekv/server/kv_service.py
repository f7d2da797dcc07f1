"""The public KV gRPC service: check the request, call the engine, build the response.

Handlers are ``async def`` and call the engine inline: a RocksDB point read or
write takes microseconds, and a thread hop per call would cost more than the
work (performance-notes.md). Only scans big enough to matter leave the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from edgekv import native
from edgekv.errors import (
    EdgeKVError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    grpc_code_for,
)
from edgekv.replication.changefeed import ChangeFeed, WatchOverflow
from edgekv.storage.engine import DeleteOp, Engine, PutOp, prefix_end
from edgekv.storage.group_commit import GroupCommitter
from edgekv.storage.record import Version
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

DEFAULT_SCAN_LIMIT = 100
# Scans asking for more items than this run on a worker thread, off the event loop.
_SCAN_INLINE_MAX = 1000

_GetResponse = kv_pb2.GetResponse
_KeyResult = kv_pb2.KeyResult
_Version = common_pb2.Version


async def abort_with(context: grpc.aio.ServicerContext, exc: EdgeKVError) -> NoReturn:
    """End the call with the status code that ``exc``'s class maps to."""
    await context.abort(grpc_code_for(exc), str(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def scan_bounds(prefix: bytes, start: bytes, end: bytes) -> tuple[bytes, bytes]:
    """The effective [start, end) of a scan request; end b"" means unbounded.

    Raises InvalidArgument when start/end fall outside the prefix's range in a
    way that leaves nothing to scan, or when start >= end.
    """
    lo, hi = start, end
    if prefix:
        lo = max(prefix, start)
        pend = prefix_end(prefix)
        hi = pend if not end else (min(end, pend) if pend else end)
    if hi and lo >= hi:
        raise InvalidArgument(
            f"scan range is empty: start {lo[:64]!r} is not below end {hi[:64]!r}"
        )
    return lo, hi


class KVService(kv_pb2_grpc.KVServicer):
    """gRPC edge of the engine for one node."""

    def __init__(
        self,
        engine: Engine,
        node_id: str,
        committer: GroupCommitter | None = None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self._engine = engine
        self._get = engine.get  # bound native Reader.get: the hot path
        self._node_id = node_id
        self._not_found = _GetResponse(found=False, served_by=node_id)
        # Set with sync_writes: writes then share fsyncs; otherwise they run inline.
        self._committer = committer
        self._feed = feed

    async def _write(self, ops: list[PutOp | DeleteOp]) -> Version:
        if self._committer is None:
            return self._engine.write(ops)
        return await self._committer.write(ops)

    async def Get(
        self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.GetResponse:
        try:
            found = self._get(request.key)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        if found is None:
            return self._not_found
        value, timestamp, origin, expires_at_ms = found
        return _GetResponse(
            found=True,
            value=value,
            version=_Version(timestamp=timestamp, origin=origin),
            served_by=self._node_id,
            expires_at_ms=expires_at_ms,
        )

    async def BatchGet(
        self, request: kv_pb2.BatchGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.BatchGetResponse:
        keys = list(request.keys)
        try:
            found_list = self._engine.get_many(keys)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        results: list[kv_pb2.KeyResult] = []
        append = results.append
        for key, found in zip(keys, found_list, strict=True):
            if found is None:
                append(_KeyResult(key=key))
            else:
                value, timestamp, origin, expires_at_ms = found
                append(
                    _KeyResult(
                        key=key,
                        found=True,
                        value=value,
                        version=_Version(timestamp=timestamp, origin=origin),
                        expires_at_ms=expires_at_ms,
                    )
                )
        return kv_pb2.BatchGetResponse(results=results, served_by=self._node_id)

    async def Put(
        self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.PutResponse:
        try:
            version = await self._write([PutOp(request.key, request.value, request.ttl_ms)])
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return kv_pb2.PutResponse(
            version=_Version(timestamp=version.timestamp, origin=version.origin),
            served_by=self._node_id,
        )

    async def Delete(
        self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.DeleteResponse:
        try:
            version = await self._write([DeleteOp(request.key)])
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return kv_pb2.DeleteResponse(
            version=_Version(timestamp=version.timestamp, origin=version.origin),
            served_by=self._node_id,
        )

    async def Write(
        self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.WriteResponse:
        try:
            ops = [_write_op(i, op) for i, op in enumerate(request.ops)]
            version = await self._write(ops)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return kv_pb2.WriteResponse(
            version=_Version(timestamp=version.timestamp, origin=version.origin),
            served_by=self._node_id,
        )

    async def Scan(
        self, request: kv_pb2.ScanRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ScanResponse:
        try:
            lo, hi = scan_bounds(request.prefix, request.start, request.end)
            token = request.page_token
            if token:
                if token < lo or (hi and token >= hi):
                    raise InvalidArgument(
                        "page_token does not belong to this scan's range; send the token "
                        "back with the same prefix/start/end"
                    )
                lo = token
            limit = request.limit or DEFAULT_SCAN_LIMIT
            if limit > _SCAN_INLINE_MAX:
                page = await asyncio.to_thread(self._engine.scan, lo, hi, limit=limit)
            else:
                page = self._engine.scan(lo, hi, limit=limit)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        keys_only = request.keys_only
        items = [
            kv_pb2.KeyValue(
                key=item.key,
                value=b"" if keys_only else item.value,
                version=_Version(timestamp=item.timestamp, origin=item.origin),
                expires_at_ms=item.expires_at_ms,
            )
            for item in page.items
        ]
        return kv_pb2.ScanResponse(
            items=items, next_page_token=page.next_start or b"", served_by=self._node_id
        )

    async def Watch(
        self, request: kv_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.WatchEvent]:
        if self._feed is None:
            await abort_with(context, Unavailable("this node does not serve Watch"))
        feed = self._feed
        assert feed is not None
        watcher = feed.watch(request.prefix)
        decode = native.decode_record
        try:
            while True:
                try:
                    change, local = await watcher.next()
                except WatchOverflow as exc:
                    await abort_with(context, ResourceExhausted(str(exc)))
                tombstone, timestamp, expires_at_ms, origin, value = decode(change.record)
                yield kv_pb2.WatchEvent(
                    key=change.key,
                    value=value,
                    version=_Version(timestamp=timestamp, origin=origin),
                    deleted=tombstone,
                    expires_at_ms=expires_at_ms,
                    local=local,
                    served_by=self._node_id,
                )
        finally:
            feed.unwatch(watcher)


def _write_op(index: int, op: kv_pb2.WriteOp) -> PutOp | DeleteOp:
    kind = op.WhichOneof("op")
    if kind == "put":
        return PutOp(op.put.key, op.put.value, op.put.ttl_ms)
    if kind == "delete":
        return DeleteOp(op.delete.key)
    raise InvalidArgument(f"ops[{index}] sets neither put nor delete")
