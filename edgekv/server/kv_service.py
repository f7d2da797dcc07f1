"""The public KV gRPC service: check the request, call the engine, build the response.

Handlers are ``async def`` and call the engine inline: a RocksDB point read or
write takes microseconds, and a thread hop per call would cost more than the
work (performance-notes.md). Only scans big enough to matter leave the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn

import grpc

from edgekv import native
from edgekv.cluster.routing import (
    FORWARDED_BY,
    Router,
    ScanSource,
    merge_scan_pages,
)
from edgekv.errors import (
    EdgeKVError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    grpc_code_for,
)
from edgekv.keyrange import intersect, overlaps, prefix_end, prefix_range, scan_bounds
from edgekv.replication.changefeed import ChangeFeed, WatchOverflow
from edgekv.server.auth import AUTHORIZATION, Authorizer
from edgekv.storage.engine import DeleteOp, Engine, PutOp, ScanItem, ScanPage
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


class KVService(kv_pb2_grpc.KVServicer):
    """gRPC edge of the engine for one node, with geo-routing for pinned keys.

    A key this node's region may not hold is never touched locally: the call
    goes to the nearest allowed node (``Router``) and its answer, with its
    ``served_by``, is returned as it is.
    """

    def __init__(
        self,
        engine: Engine,
        node_id: str,
        committer: GroupCommitter | None = None,
        feed: ChangeFeed | None = None,
        router: Router | None = None,
        auth: Authorizer | None = None,
    ) -> None:
        self._engine = engine
        self._get = engine.get  # bound native Reader.get: the hot path
        self._node_id = node_id
        self._not_found = _GetResponse(found=False, served_by=node_id)
        # Set with sync_writes: writes then share fsyncs; otherwise they run inline.
        self._committer = committer
        self._feed = feed
        self._router = router
        # Fast path: with no placement rules nothing is ever forwarded.
        self._all_local = router is None or router.everything_local
        self._auth = auth  # None: auth disabled (local development only)

    async def _authorize(
        self,
        context: grpc.aio.ServicerContext,
        scope: str,
        keys: Sequence[bytes] = (),
        key_range: tuple[bytes, bytes] | None = None,
    ) -> None:
        assert self._auth is not None
        try:
            self._auth.authorize(context, scope, keys, key_range)
        except EdgeKVError as exc:
            await abort_with(context, exc)

    async def _write(self, ops: list[PutOp | DeleteOp]) -> Version:
        if self._committer is None:
            return self._engine.write(ops)
        return await self._committer.write(ops)

    async def _forward(
        self, method: str, request: Any, key: bytes, context: grpc.aio.ServicerContext
    ) -> Any:
        """Serve ``request`` at the nearest node allowed to hold ``key``."""
        router = self._router
        assert router is not None
        forwarded_by = _forwarded_by(context)
        try:
            if forwarded_by is not None:
                router.refuse_misrouted(forwarded_by)
            return await router.forward(
                method,
                request,
                key,
                timeout_s=_remaining(context),
                credentials=_authorization(context),
            )
        except EdgeKVError as exc:
            await abort_with(context, exc)
        except grpc.aio.AioRpcError as exc:  # the allowed node's own answer
            await context.abort(exc.code(), exc.details() or "")

    async def Get(
        self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.GetResponse:
        if self._auth is not None:
            await self._authorize(context, "read", (request.key,))
        if not self._all_local and not self._router.is_local(request.key):  # type: ignore[union-attr]
            return await self._forward("Get", request, request.key, context)
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
        if self._auth is not None:
            await self._authorize(context, "read", keys)
        remote: dict[bytes, list[int]] = {}  # placement group -> positions in keys
        if not self._all_local:
            router = self._router
            assert router is not None
            for i, key in enumerate(keys):
                if not router.is_local(key):
                    remote.setdefault(router.placement.group_of(key), []).append(i)
        local_keys = keys
        if remote:
            far = {i for positions in remote.values() for i in positions}
            local_keys = [k for i, k in enumerate(keys) if i not in far]
        try:
            found_list = self._engine.get_many(local_keys)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        results: list[kv_pb2.KeyResult] = []
        append = results.append
        for key, found in zip(local_keys, found_list, strict=True):
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
        if not remote:
            return kv_pb2.BatchGetResponse(results=results, served_by=self._node_id)
        return await self._batch_get_stitched(keys, remote, results, context)

    async def _batch_get_stitched(
        self,
        keys: list[bytes],
        remote: dict[bytes, list[int]],
        local_results: list[kv_pb2.KeyResult],
        context: grpc.aio.ServicerContext,
    ) -> kv_pb2.BatchGetResponse:
        by_position: dict[int, kv_pb2.KeyResult] = {}
        far = sorted(i for positions in remote.values() for i in positions)
        local_positions = [i for i in range(len(keys)) if i not in set(far)]
        by_position.update(zip(local_positions, local_results, strict=True))
        replies = await asyncio.gather(
            *(
                self._forward(
                    "BatchGet",
                    kv_pb2.BatchGetRequest(keys=[keys[i] for i in positions]),
                    keys[positions[0]],
                    context,
                )
                for positions in remote.values()
            )
        )
        for positions, reply in zip(remote.values(), replies, strict=True):
            by_position.update(zip(positions, reply.results, strict=True))
        return kv_pb2.BatchGetResponse(
            results=[by_position[i] for i in range(len(keys))], served_by=self._node_id
        )

    async def Put(
        self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.PutResponse:
        if self._auth is not None:
            await self._authorize(context, "write", (request.key,))
        if not self._all_local and not self._router.is_local(request.key):  # type: ignore[union-attr]
            return await self._forward("Put", request, request.key, context)
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
        if self._auth is not None:
            await self._authorize(context, "write", (request.key,))
        if not self._all_local and not self._router.is_local(request.key):  # type: ignore[union-attr]
            return await self._forward("Delete", request, request.key, context)
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
        if self._auth is not None:
            keys = [op.put.key if op.HasField("put") else op.delete.key for op in request.ops]
            await self._authorize(context, "write", keys)
        try:
            ops = [_write_op(i, op) for i, op in enumerate(request.ops)]
            if not self._all_local and ops:
                target = self._write_target(ops)
                if target is not None:
                    return await self._forward("Write", request, target, context)
            version = await self._write(ops)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return kv_pb2.WriteResponse(
            version=_Version(timestamp=version.timestamp, origin=version.origin),
            served_by=self._node_id,
        )

    def _write_target(self, ops: list[PutOp | DeleteOp]) -> bytes | None:
        """None to apply ``ops`` here, or a key whose placement serves the whole batch.

        A batch is atomic on one node only, so it must fall in one placement
        group (or all in groups this node holds). A batch that spans groups held
        by different nodes is refused rather than applied half here, half there.
        """
        router = self._router
        assert router is not None
        groups = {router.placement.group_of(op.key): op.key for op in ops}
        if all(router.is_local(key) for key in groups.values()):
            return None
        if len(groups) == 1:
            return next(iter(groups.values()))
        shown = ", ".join(repr(g.decode("utf-8", "replace") or "(global)") for g in sorted(groups))
        raise InvalidArgument(
            f"batch spans placement groups {shown} that are held by different regions; a Write "
            f"is atomic only within one placement, so split it into one Write per placement"
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
            if self._auth is not None:
                self._auth.authorize(context, "read", key_range=(lo, hi))
            remote = [] if self._all_local else self._remote_ranges(lo, hi)
            if remote:
                return await self._scan_stitched(request, lo, hi, limit, remote, context)
            page = await self._scan_local(lo, hi, limit)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return kv_pb2.ScanResponse(
            items=self._scan_items(page.items, request.keys_only),
            next_page_token=page.next_start or b"",
            served_by=self._node_id,
        )

    async def _scan_local(self, lo: bytes, hi: bytes, limit: int) -> ScanPage:
        if limit > _SCAN_INLINE_MAX:
            return await asyncio.to_thread(self._engine.scan, lo, hi, limit=limit)
        return self._engine.scan(lo, hi, limit=limit)

    @staticmethod
    def _scan_items(items: list[ScanItem], keys_only: bool) -> list[kv_pb2.KeyValue]:
        return [
            kv_pb2.KeyValue(
                key=item.key,
                value=b"" if keys_only else item.value,
                version=_Version(timestamp=item.timestamp, origin=item.origin),
                expires_at_ms=item.expires_at_ms,
            )
            for item in items
        ]

    def _remote_ranges(self, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes, bytes]]:
        """(start, end, rule prefix) of each part of [lo, hi) this node may not hold."""
        router = self._router
        assert router is not None
        parts = []
        for rule in router.placement.rules:
            if router.region in rule.regions:
                continue
            r_lo, r_hi = prefix_range(rule.prefix)
            if overlaps(lo, hi, r_lo, r_hi):
                start, end = intersect(lo, hi, r_lo, r_hi)
                parts.append((start, end, rule.prefix))
        return parts

    async def _scan_stitched(
        self,
        request: kv_pb2.ScanRequest,
        lo: bytes,
        hi: bytes,
        limit: int,
        remote: list[tuple[bytes, bytes, bytes]],
        context: grpc.aio.ServicerContext,
    ) -> kv_pb2.ScanResponse:
        """A scan over several placements: each part from a node that holds it, merged."""
        if _forwarded_by(context) is not None and self._router is not None:
            self._router.refuse_misrouted(_forwarded_by(context))
        local = await self._scan_local(lo, hi, limit)
        sources = [
            ScanSource(self._scan_items(local.items, request.keys_only), local.next_start or b"")
        ]
        replies = await asyncio.gather(
            *(
                self._forward(
                    "Scan",
                    kv_pb2.ScanRequest(
                        start=start, end=end, limit=limit, keys_only=request.keys_only
                    ),
                    prefix,
                    context,
                )
                for start, end, prefix in remote
            )
        )
        sources += [ScanSource(list(r.items), r.next_page_token) for r in replies]
        items, token = merge_scan_pages(sources, limit)
        return kv_pb2.ScanResponse(items=items, next_page_token=token, served_by=self._node_id)

    async def Watch(
        self, request: kv_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.WatchEvent]:
        if self._auth is not None:
            await self._authorize(
                context, "read", key_range=(request.prefix, prefix_end(request.prefix))
            )
        if self._feed is None:
            await abort_with(context, Unavailable("this node does not serve Watch"))
        remote = (
            []
            if self._all_local
            else self._remote_ranges(request.prefix, prefix_end(request.prefix))
        )
        if remote and _forwarded_by(context) is not None:
            await abort_with(
                context, FailedPrecondition("forwarded Watch spans placements held elsewhere")
            )
        queue: asyncio.Queue[kv_pb2.WatchEvent | BaseException] = asyncio.Queue(10_000)
        pumps = [asyncio.create_task(self._pump_local_watch(request.prefix, queue))]
        for _, _, rule_prefix in remote:
            watch_prefix = max(rule_prefix, request.prefix, key=len)
            pumps.append(
                asyncio.create_task(
                    self._pump_remote_watch(
                        watch_prefix, rule_prefix, queue, _authorization(context)
                    )
                )
            )
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    if isinstance(item, EdgeKVError):
                        await abort_with(context, item)
                    raise item
                yield item
        finally:
            for pump in pumps:
                pump.cancel()

    async def _pump_local_watch(
        self, prefix: bytes, queue: asyncio.Queue[kv_pb2.WatchEvent | BaseException]
    ) -> None:
        feed = self._feed
        assert feed is not None
        watcher = feed.watch(prefix)
        decode = native.decode_record
        try:
            while True:
                try:
                    change, local = await watcher.next()
                except WatchOverflow as exc:
                    await queue.put(ResourceExhausted(str(exc)))
                    return
                tombstone, timestamp, expires_at_ms, origin, value = decode(change.record)
                await queue.put(
                    kv_pb2.WatchEvent(
                        key=change.key,
                        value=value,
                        version=_Version(timestamp=timestamp, origin=origin),
                        deleted=tombstone,
                        expires_at_ms=expires_at_ms,
                        local=local,
                        served_by=self._node_id,
                    )
                )
        finally:
            feed.unwatch(watcher)

    async def _pump_remote_watch(
        self,
        prefix: bytes,
        rule_prefix: bytes,
        queue: asyncio.Queue[kv_pb2.WatchEvent | BaseException],
        credentials: str | None,
    ) -> None:
        """Relay a Watch from the nearest node that holds ``rule_prefix``'s keys."""
        router = self._router
        assert router is not None
        metadata: tuple[tuple[str, str], ...] = ((FORWARDED_BY, router.spec.id),)
        if credentials is not None:
            metadata += ((AUTHORIZATION, credentials),)
        tried = router.candidates(rule_prefix)
        for node_id in tried:
            call = router.stub(node_id).Watch(
                kv_pb2.WatchRequest(prefix=prefix),
                metadata=metadata,
            )
            try:
                async for event in call:
                    await queue.put(event)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    await queue.put(exc)
                    return
        await queue.put(router._unavailable(rule_prefix, tried, "watch"))


def _forwarded_by(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == FORWARDED_BY:
            return str(value)
    return None


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's bearer token header, passed on to the node a call is forwarded to."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION:
            return str(value)
    return None


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(0.001, remaining)


def _write_op(index: int, op: kv_pb2.WriteOp) -> PutOp | DeleteOp:
    kind = op.WhichOneof("op")
    if kind == "put":
        return PutOp(op.put.key, op.put.value, op.put.ttl_ms)
    if kind == "delete":
        return DeleteOp(op.delete.key)
    raise InvalidArgument(f"ops[{index}] sets neither put nor delete")
