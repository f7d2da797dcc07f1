"""edgekv.AsyncClient: the asyncio SDK on grpc.aio, with the same API as Client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._base import DEFAULT_TIMEOUT_S, ClientBase
from edgekv.client._types import Delete, Entry, Member, NodeStatus, Put, WatchEvent, WriteResult
from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.retry import RetryPolicy
from edgekv.v1 import cluster_pb2, kv_pb2

# Indirection so tests can count and skip backoff waits.
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


class AsyncClient(ClientBase):
    """An asyncio edgekv client with the contract of ``edgekv.Client``.

    Every method is a coroutine except ``scan`` and ``watch``, which return
    async iterators (``async for entry in client.scan(b"p/")``). Discovery (with
    ``discover``, the default) runs on ``async with`` / ``await connect()`` or
    else on the first call. Use ``async with AsyncClient(...) as client``, or
    ``await client.close()``. Bound to the event loop it first runs in: use one
    instance per loop; many coroutines of that loop may share it.
    """

    _grpc = grpc.aio

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        discover: bool = True,
        rtt_probes: int = 3,
        channel_options: Sequence[tuple[str, Any]] = (),
        endpoint_overrides: Mapping[str, str] | None = None,
        token: str | None = None,
        tls_ca_file: str | None = None,
    ) -> None:
        super().__init__(
            endpoints, timeout_s=timeout_s, retry=retry, rtt_probes=rtt_probes,
            channel_options=channel_options, endpoint_overrides=endpoint_overrides, token=token,
            tls_ca_file=tls_ca_file,
        )  # fmt: skip
        self._connected = not discover

    async def connect(self) -> None:
        """Discover the topology now (otherwise done on the first call); no-op if done."""
        if not self._connected:
            await self.refresh_topology()
            self._connected = True

    async def refresh_topology(self) -> None:
        """Re-read Cluster.Members from the nearest answering node and re-measure RTTs.

        Keeps the current topology when no node answers (and raises the error
        when there is just one node, so a bad seed fails loudly).
        """
        last: grpc.RpcError | None = None
        for node in self.topology.nearest():
            try:
                resp = await self._cluster(node).Members(
                    cluster_pb2.MembersRequest(), timeout=self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                last = exc
                continue
            topology = Topology.from_members(resp, self._overrides)
            await asyncio.gather(*(self._probe(topology, m) for m in topology.nodes))
            topology.reorder()
            self.topology = topology
            return
        if last is not None and len(self.topology.nodes) == 1:
            raise codec.error_from_rpc(last, self.topology.nodes[0].endpoint) from None

    async def _probe(self, topology: Topology, node: NodeRoute) -> None:
        stub = self._cluster(node)
        for _ in range(self._rtt_probes):
            start = time.perf_counter()
            try:
                await stub.Status(
                    cluster_pb2.StatusRequest(),
                    timeout=min(self.timeout_s, 2.0),
                    metadata=self._metadata,
                )
            except grpc.RpcError:
                node.failures += 1
                return
            topology.record_rtt(node, (time.perf_counter() - start) * 1000.0)

    async def _call(
        self,
        key: bytes | None,
        method: str,
        request: Any,
        idempotent: bool,
        timeout_s: float | None,
        stubs: Callable[[NodeRoute], Any] | None = None,
    ) -> Any:
        """``Client._call`` for asyncio: same routing, retries and error mapping."""
        if not self._connected:
            await self.connect()
        timeout = self.timeout_s if timeout_s is None else self._timeout(timeout_s)
        topology = self.topology
        nodes = topology.route(key) if key is not None else topology.nearest()
        get_stub = stubs or self._kv
        metadata = self._metadata
        last: grpc.RpcError | None = None
        last_node: NodeRoute | None = None
        for node in nodes:
            rpc = getattr(get_stub(node), method)
            attempt = 0
            while True:
                attempt += 1
                try:
                    resp = await rpc(request, timeout=timeout, metadata=metadata)
                except grpc.RpcError as exc:
                    delay = self._after_failure(exc, node, attempt, idempotent)
                    if delay is None:
                        last, last_node = exc, node
                        break
                    await _sleep(delay)
                    continue
                if node.failures:
                    topology.mark_ok(node)
                return resp
        raise self._exhausted(last, last_node, len(nodes))

    # -- KV --------------------------------------------------------------------

    async def get(self, key: bytes | str, *, timeout_s: float | None = None) -> Entry | None:
        """The live value of ``key`` as an Entry, or None if absent, deleted or expired."""
        k = key if type(key) is bytes else codec.to_bytes(key)
        resp = await self._call(k, "Get", kv_pb2.GetRequest(key=k), True, timeout_s)
        return codec.entry_from_get(k, resp)

    async def get_many(
        self, keys: Iterable[bytes | str], *, timeout_s: float | None = None
    ) -> list[Entry | None]:
        """``get`` of many keys in one call: one Entry or None per key, in the order of ``keys``."""
        req = codec.get_many_request(keys)
        if not req.keys:
            return []
        resp = await self._call(req.keys[0], "BatchGet", req, True, timeout_s)
        return codec.entries_from_batch(resp)

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        ttl_ms: int = 0,
        timeout_s: float | None = None,
    ) -> WriteResult:
        """Store ``value`` (expiring ``ttl_ms`` after the write if > 0); returns its version."""
        k = key if type(key) is bytes else codec.to_bytes(key)
        req = codec.put_request(k, value, ttl_ms)
        return codec.write_result(await self._call(k, "Put", req, False, timeout_s))

    async def delete(self, key: bytes | str, *, timeout_s: float | None = None) -> WriteResult:
        """Delete ``key`` (a tombstone that replicates); deleting a missing key succeeds."""
        k = codec.to_bytes(key)
        resp = await self._call(k, "Delete", kv_pb2.DeleteRequest(key=k), False, timeout_s)
        return codec.write_result(resp)

    async def write(
        self, ops: Iterable[Put | Delete], *, timeout_s: float | None = None
    ) -> WriteResult:
        """Apply ``Put``/``Delete`` ops atomically under one version; each key at most once."""
        req = codec.write_request(ops)
        resp = await self._call(codec.first_key(req), "Write", req, False, timeout_s)
        return codec.write_result(resp)

    def scan(
        self,
        prefix: bytes | str = b"",
        *,
        start: bytes | str = b"",
        end: bytes | str = b"",
        page_size: int = 100,
        keys_only: bool = False,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Entry]:
        """Live entries under ``prefix`` and in [start, end), in key order (``Client.scan``).

        Not a coroutine: returns an async iterator at once (arguments checked
        now), which fetches pages lazily: ``async for e in client.scan(...)``.
        """
        req = codec.scan_request(prefix, start, end, page_size, keys_only)
        return self._scan(req, codec.check_limit(limit), timeout_s)

    async def _scan(
        self, req: kv_pb2.ScanRequest, remaining: int | None, timeout_s: float | None
    ) -> AsyncIterator[Entry]:
        route = codec.scan_route_key(req)
        page_size = req.limit
        while remaining is None or remaining > 0:
            if remaining is not None and remaining < page_size:
                req.limit = remaining
            resp = await self._call(route, "Scan", req, True, timeout_s)
            entries = codec.scan_entries(resp)
            if remaining is not None:
                entries = entries[:remaining]
                remaining -= len(entries)
            for entry in entries:
                yield entry
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    async def watch(
        self, prefix: bytes | str = b"", *, timeout_s: float | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from now on; stop iterating to stop watching.

        ``timeout_s`` bounds the whole watch (None: until stopped). Not retried.
        """
        if not self._connected:
            await self.connect()
        p = codec.to_bytes(prefix, "prefix")
        node = self.topology.route(p)[0] if p else self.topology.nearest()[0]
        call = self._kv(node).Watch(
            kv_pb2.WatchRequest(prefix=p), timeout=timeout_s, metadata=self._metadata
        )
        try:
            async for event in call:
                yield codec.watch_event(event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise codec.error_from_rpc(exc, node.endpoint) from None
        finally:
            call.cancel()

    # -- cluster ---------------------------------------------------------------

    async def status(self, *, timeout_s: float | None = None) -> NodeStatus:
        """Status of the nearest node (retried like a read)."""
        resp = await self._cluster_call("Status", cluster_pb2.StatusRequest(), timeout_s)
        return codec.node_status(resp)

    async def members(self, *, timeout_s: float | None = None) -> list[Member]:
        """Every node as the nearest node sees it (reachability, RTT, lag)."""
        resp = await self._cluster_call("Members", cluster_pb2.MembersRequest(), timeout_s)
        return codec.members(resp)

    async def _cluster_call(
        self, method: str, request: Any, timeout_s: float | None, idempotent: bool = True
    ) -> Any:
        """A Cluster-service call on the nearest node (raw response message)."""
        return await self._call(None, method, request, idempotent, timeout_s, self._cluster)

    # -- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        """Close every channel; in-flight calls are cancelled. Idempotent."""
        for channel in self._forget_channels():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
