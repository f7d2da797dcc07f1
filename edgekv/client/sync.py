"""edgekv.Client: the synchronous SDK, on gRPC's synchronous stack (no event loop)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._base import DEFAULT_TIMEOUT_S, ClientBase
from edgekv.client._types import Delete, Entry, Member, NodeStatus, Put, WatchEvent, WriteResult
from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.retry import RetryPolicy
from edgekv.errors import EdgeKVError, Unavailable
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2


class Client(ClientBase):
    """A synchronous edgekv client.

    ``endpoints`` is one "host:port" or several seeds. With ``discover`` (the
    default) the client reads the topology from Cluster.Members, measures RTT
    to every node, and sends each call to the nearest node allowed to hold its
    key, failing over to the next one when a node is down. Reads are retried
    with backoff on UNAVAILABLE (``retry``); writes are not retried on the same
    node. Keys and values are bytes; str is accepted and encoded as UTF-8.
    Every method takes ``timeout_s`` (seconds per attempt).
    ``endpoint_overrides`` (node id -> host:port) dials discovered nodes at other
    addresses than they advertise (NAT, proxies, port forwards). Errors are
    ``edgekv.EdgeKVError`` subclasses (InvalidArgument, Unavailable, ...).
    Thread-safe: gRPC channels may be shared by threads.
    """

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
        if discover:
            self.refresh_topology()

    # -- plumbing --------------------------------------------------------------

    def refresh_topology(self) -> None:
        """Re-read Cluster.Members from the nearest answering node and re-measure RTTs."""
        last: grpc.RpcError | None = None
        for node in self.topology.nearest():
            stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
            try:
                resp = stub.Members(
                    cluster_pb2.MembersRequest(), timeout=self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                last = exc
                continue
            topology = Topology.from_members(resp, self._overrides)
            for member in topology.nodes:
                self._probe(member)
            topology.reorder()
            self.topology = topology
            return
        if last is not None and len(self.topology.nodes) == 1:
            raise codec.error_from_rpc(last, self.topology.nodes[0].endpoint)

    def _probe(self, node: NodeRoute) -> None:
        stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
        for _ in range(self._rtt_probes):
            start = time.perf_counter()
            try:
                stub.Status(
                    cluster_pb2.StatusRequest(),
                    timeout=min(self.timeout_s, 2.0),
                    metadata=self._metadata,
                )
            except grpc.RpcError:
                node.failures += 1
                return
            self.topology.record_rtt(node, (time.perf_counter() - start) * 1000.0)

    def _call(
        self,
        key: bytes | None,
        method: str,
        request: Any,
        idempotent: bool,
        timeout_s: float | None,
    ) -> Any:
        timeout = timeout_s or self.timeout_s
        topology = self.topology
        nodes = topology.route(key) if key is not None else topology.nearest()
        last: grpc.RpcError | None = None
        for node in nodes:
            attempt = 0
            while True:
                attempt += 1
                try:
                    resp = getattr(self._kv(node), method)(
                        request, timeout=timeout, metadata=self._metadata
                    )
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise codec.error_from_rpc(exc) from None
                    last = exc
                    if self._retry.should_retry(code, attempt, idempotent):
                        time.sleep(self._retry.backoff_s(attempt))
                        continue
                    topology.mark_failed(node)
                    break
                if node.failures:
                    topology.mark_ok(node)
                return resp
        assert last is not None
        raise codec.error_from_rpc(last, nodes[0].endpoint if nodes else "") from None

    # -- KV --------------------------------------------------------------------

    def get(self, key: bytes | str, *, timeout_s: float | None = None) -> Entry | None:
        """The live value of ``key`` as an Entry, or None if absent, deleted or expired."""
        k = key if type(key) is bytes else codec.to_bytes(key)
        resp = self._call(k, "Get", kv_pb2.GetRequest(key=k), True, timeout_s)
        return codec.entry_from_get(k, resp)

    def get_many(
        self, keys: Iterable[bytes | str], *, timeout_s: float | None = None
    ) -> list[Entry | None]:
        """``get`` of many keys in one call; results in the order of ``keys``."""
        ks = [codec.to_bytes(k) for k in keys]
        if not ks:
            return []
        resp = self._call(ks[0], "BatchGet", kv_pb2.BatchGetRequest(keys=ks), True, timeout_s)
        return codec.entries_from_batch(resp)

    def put(
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
        return codec.write_result(self._call(k, "Put", req, False, timeout_s))

    def delete(self, key: bytes | str, *, timeout_s: float | None = None) -> WriteResult:
        """Delete ``key`` (a tombstone that replicates); deleting a missing key succeeds."""
        k = codec.to_bytes(key)
        return codec.write_result(
            self._call(k, "Delete", kv_pb2.DeleteRequest(key=k), False, timeout_s)
        )

    def write(self, ops: Iterable[Put | Delete], *, timeout_s: float | None = None) -> WriteResult:
        """Apply puts and deletes atomically under one version (one placement per batch)."""
        req = codec.write_request(ops)
        return codec.write_result(self._call(codec.first_key(req), "Write", req, False, timeout_s))

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
    ) -> Iterator[Entry]:
        """Live entries under ``prefix`` / in [start, end), in key order, paging lazily."""
        p, s, e = codec.to_bytes(prefix), codec.to_bytes(start), codec.to_bytes(end)
        token = b""
        produced = 0
        while True:
            req = kv_pb2.ScanRequest(
                prefix=p, start=s, end=e, limit=page_size, page_token=token, keys_only=keys_only
            )
            resp = self._call(p or s or None, "Scan", req, True, timeout_s)
            for entry in codec.scan_entries(resp):
                yield entry
                produced += 1
                if limit is not None and produced >= limit:
                    return
            token = resp.next_page_token
            if not token:
                return

    def watch(
        self, prefix: bytes | str = b"", *, timeout_s: float | None = None
    ) -> Iterator[WatchEvent]:
        """Changes under ``prefix`` from now on; close the iterator to stop watching.

        ``timeout_s`` here bounds the whole watch (None: until closed).
        """
        p = codec.to_bytes(prefix)
        node = self.topology.route(p)[0] if p else self.topology.nearest()[0]
        call = self._kv(node).Watch(
            kv_pb2.WatchRequest(prefix=p), timeout=timeout_s, metadata=self._metadata
        )
        try:
            for event in call:
                yield codec.watch_event(event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise codec.error_from_rpc(exc, node.endpoint) from None
        finally:
            call.cancel()

    # -- cluster ---------------------------------------------------------------

    def status(self, *, timeout_s: float | None = None) -> NodeStatus:
        """Status of the nearest node."""
        return codec.node_status(
            self._cluster_call("Status", cluster_pb2.StatusRequest(), timeout_s)
        )

    def members(self, *, timeout_s: float | None = None) -> list[Member]:
        """Every node as the nearest node sees it (reachability, RTT, lag)."""
        return codec.members(self._cluster_call("Members", cluster_pb2.MembersRequest(), timeout_s))

    def _cluster_call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        last: EdgeKVError | None = None
        for node in self.topology.nearest():
            stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
            try:
                return getattr(stub, method)(
                    request, timeout=timeout_s or self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                last = codec.error_from_rpc(exc, node.endpoint)
                if not isinstance(last, Unavailable):
                    raise last from None
        assert last is not None
        raise last

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._kv_stubs.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
