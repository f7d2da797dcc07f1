"""edgekv.AsyncClient: the asyncio SDK on grpc.aio, with the same API as Client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._base import DEFAULT_TIMEOUT_S, ClientBase
from edgekv.client._types import Delete, Entry, Member, NodeStatus, Put, WatchEvent, WriteResult
from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.retry import RetryPolicy
from edgekv.errors import EdgeKVError, Unavailable
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2


class AsyncClient(ClientBase):
    """An asyncio edgekv client; see ``edgekv.Client`` for the contract.

    Discovery runs on the first call (or ``await client.connect()``). Use
    ``async with AsyncClient(...) as client``. One instance per event loop.
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
        """Discover the topology now (otherwise done on the first call)."""
        if not self._connected:
            await self.refresh_topology()
            self._connected = True

    async def refresh_topology(self) -> None:
        """Re-read Cluster.Members from the nearest answering node and re-measure RTTs."""
        last: grpc.RpcError | None = None
        for node in self.topology.nearest():
            stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
            try:
                resp = await stub.Members(
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
            raise codec.error_from_rpc(last, self.topology.nodes[0].endpoint)

    async def _probe(self, topology: Topology, node: NodeRoute) -> None:
        stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
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
    ) -> Any:
        if not self._connected:
            await self.connect()
        timeout = timeout_s or self.timeout_s
        topology = self.topology
        nodes = topology.route(key) if key is not None else topology.nearest()
        last: grpc.RpcError | None = None
        for node in nodes:
            attempt = 0
            while True:
                attempt += 1
                try:
                    resp = await getattr(self._kv(node), method)(
                        request, timeout=timeout, metadata=self._metadata
                    )
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise codec.error_from_rpc(exc) from None
                    last = exc
                    if self._retry.should_retry(code, attempt, idempotent):
                        await asyncio.sleep(self._retry.backoff_s(attempt))
                        continue
                    topology.mark_failed(node)
                    break
                if node.failures:
                    topology.mark_ok(node)
                return resp
        assert last is not None
        raise codec.error_from_rpc(last, nodes[0].endpoint if nodes else "") from None

    async def get(self, key: bytes | str, *, timeout_s: float | None = None) -> Entry | None:
        """The live value of ``key`` as an Entry, or None if absent, deleted or expired."""
        k = key if type(key) is bytes else codec.to_bytes(key)
        resp = await self._call(k, "Get", kv_pb2.GetRequest(key=k), True, timeout_s)
        return codec.entry_from_get(k, resp)

    async def get_many(
        self, keys: Iterable[bytes | str], *, timeout_s: float | None = None
    ) -> list[Entry | None]:
        """``get`` of many keys in one call; results in the order of ``keys``."""
        ks = [codec.to_bytes(k) for k in keys]
        if not ks:
            return []
        resp = await self._call(ks[0], "BatchGet", kv_pb2.BatchGetRequest(keys=ks), True, timeout_s)
        return codec.entries_from_batch(resp)

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        ttl_ms: int = 0,
        timeout_s: float | None = None,
    ) -> WriteResult:
        """Store ``value`` (expiring after ``ttl_ms`` if > 0); returns its version."""
        k = codec.to_bytes(key)
        req = kv_pb2.PutRequest(key=k, value=codec.to_bytes(value, "value"), ttl_ms=ttl_ms)
        return codec.write_result(await self._call(k, "Put", req, False, timeout_s))

    async def delete(self, key: bytes | str, *, timeout_s: float | None = None) -> WriteResult:
        """Delete ``key`` (a tombstone that replicates); deleting a missing key succeeds."""
        k = codec.to_bytes(key)
        resp = await self._call(k, "Delete", kv_pb2.DeleteRequest(key=k), False, timeout_s)
        return codec.write_result(resp)

    async def write(
        self, ops: Iterable[Put | Delete], *, timeout_s: float | None = None
    ) -> WriteResult:
        """Apply puts and deletes atomically under one version (one placement per batch)."""
        req = codec.write_request(ops)
        resp = await self._call(codec.first_key(req), "Write", req, False, timeout_s)
        return codec.write_result(resp)

    async def scan(
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
        """Live entries under ``prefix`` / in [start, end), in key order, paging lazily."""
        p, s, e = codec.to_bytes(prefix), codec.to_bytes(start), codec.to_bytes(end)
        token = b""
        produced = 0
        while True:
            req = kv_pb2.ScanRequest(
                prefix=p, start=s, end=e, limit=page_size, page_token=token, keys_only=keys_only
            )
            resp = await self._call(p or s or None, "Scan", req, True, timeout_s)
            for entry in codec.scan_entries(resp):
                yield entry
                produced += 1
                if limit is not None and produced >= limit:
                    return
            token = resp.next_page_token
            if not token:
                return

    async def watch(
        self, prefix: bytes | str = b"", *, timeout_s: float | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from now on; stop iterating to stop watching."""
        if not self._connected:
            await self.connect()
        p = codec.to_bytes(prefix)
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

    async def status(self, *, timeout_s: float | None = None) -> NodeStatus:
        """Status of the nearest node."""
        resp = await self._cluster_call("Status", cluster_pb2.StatusRequest(), timeout_s)
        return codec.node_status(resp)

    async def members(self, *, timeout_s: float | None = None) -> list[Member]:
        """Every node as the nearest node sees it (reachability, RTT, lag)."""
        resp = await self._cluster_call("Members", cluster_pb2.MembersRequest(), timeout_s)
        return codec.members(resp)

    async def _cluster_call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        if not self._connected:
            await self.connect()
        last: EdgeKVError | None = None
        for node in self.topology.nearest():
            stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
            try:
                return await getattr(stub, method)(
                    request, timeout=timeout_s or self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                last = codec.error_from_rpc(exc, node.endpoint)
                if not isinstance(last, Unavailable):
                    raise last from None
        assert last is not None
        raise last

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._kv_stubs.clear()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
