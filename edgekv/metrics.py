"""Every Prometheus metric of a node, defined once, served on ``metrics_listen``.

Request counts and latency histograms come from a gRPC interceptor (per
service, method and status code, kept in plain ints by
server/call_metrics.py: the request path takes no lock) and from the HTTP door
(per route and HTTP status, :class:`HttpRecorder`). Everything else is read from the node's
:class:`~edgekv.server.view.NodeView` when Prometheus scrapes, so the request
path pays nothing for it: replication lag and in-flight bytes per peer, peer
reachability and RTT, anti-entropy repairs, RocksDB size, the clock skew seen
from peers.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgekv.server.call_metrics import CallMetrics, MethodStats
from edgekv.server.repair_metrics import repair_families
from edgekv.server.view import NodeView

# Latency buckets from 100 µs (a local read) to 10 s (a forwarded call on a bad day).
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)  # fmt: skip


class NodeMetrics:
    """The metrics of one node, in its own registry (several nodes may share a process).

    The request metrics exist from construction (the interceptor is installed
    before the server starts); the node-state gauges from :meth:`watch`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # edgekv_requests_total and edgekv_request_duration_seconds (gRPC port).
        self.calls = CallMetrics(_BUCKETS)
        self.registry.register(self.calls)
        # edgekv_http_requests_total and edgekv_http_request_duration_seconds, kept the
        # same way (plain ints on the loop), per route and HTTP status.
        self.http_calls = CallMetrics(
            _BUCKETS,
            requests=(
                "edgekv_http_requests",
                "Requests served by the HTTP door (Connect, gRPC-Web, REST), by route and HTTP "
                "status (gRPC-Web and Connect streams answer 200 and carry their code in the "
                "body).",
            ),
            latency=(
                "edgekv_http_request_duration_seconds",
                "HTTP door latency on the server until the response starts, by route.",
            ),
            labels=("route", "status"),
        )
        self.registry.register(self.http_calls)
        self._state: _NodeStateExporter | None = None
        self._server: Any = None
        self._port = 0

    def watch(self, view: NodeView) -> None:
        """Report the state of the node behind ``view`` at every scrape (from now on)."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = _NodeStateExporter(view)
        self.registry.register(self._state)

    @property
    def port(self) -> int:
        """The bound /metrics port (0 until served)."""
        return self._port

    def serve(self, address: str) -> int:
        """Serve /metrics over HTTP on ``address`` (host:port); returns the bound port."""
        host, _, port = address.rpartition(":")
        result = start_http_server(int(port), host.strip("[]") or "0.0.0.0", self.registry)
        self._server = result[0] if isinstance(result, tuple) else result
        self._port = int(self._server.server_port) if self._server is not None else int(port)
        return self._port

    def close(self) -> None:
        """Stop serving /metrics and stop reading the node (it is about to close)."""
        if self._state is not None:
            self.registry.unregister(self._state)
            self._state = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _MetricsInterceptor(self)

    def wrap(self, method_path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` counted and timed, for interceptors.WrapOnce (the interceptor's wrap)."""
        wrapped: grpc.RpcMethodHandler = _MetricsInterceptor(self).wrap(method_path, handler)
        return wrapped

    def http_recorder(self) -> HttpRecorder:
        """What the HTTP door calls once per request (edgekv/http/app.py)."""
        return HttpRecorder(self)

    def operation_recorder(self) -> OperationRecorder:
        """What KV.Stream calls once per operation (server/kv_stream.py)."""
        return OperationRecorder(self)


class HttpRecorder:
    """Counts and times HTTP door requests, per route and status. Event-loop only."""

    __slots__ = ("_calls", "_stats")

    def __init__(self, metrics: NodeMetrics) -> None:
        self._calls = metrics.http_calls
        self._stats: dict[str, MethodStats] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        stats = self._stats.get(route)
        if stats is None:
            stats = self._stats[route] = self._calls.stats(route)
        stats.record(status, seconds)


class OperationRecorder:
    """Counts and times each operation of a KV.Stream as its unary method's call
    (service KV, method Get/Put/...), so dashboards see one figure per method
    whichever transport carried it."""

    __slots__ = ("_calls", "_stats")

    def __init__(self, metrics: NodeMetrics) -> None:
        self._calls = metrics.calls
        self._stats: dict[str, MethodStats] = {}

    def record(self, method: str, code: str, seconds: float) -> None:
        stats = self._stats.get(method)
        if stats is None:
            stats = self._stats[method] = self._calls.method("KV", method)
        stats.record(code, seconds)


class _MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary call; streams are counted when they end."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # method -> handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method_path = details.method
        cached = self._wrapped.get(method_path)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = self.wrap(method_path, handler)
        self._wrapped[method_path] = wrapped
        return wrapped

    def wrap(self, method_path: str, handler: grpc.RpcMethodHandler) -> Any:
        """``handler`` counted and timed (interceptors.WrapOnce composes it with others)."""
        service, _, method = method_path.lstrip("/").rpartition("/")
        record = self._metrics.calls.method(service.rsplit(".", 1)[-1], method).record

        def finish(context: grpc.aio.ServicerContext, started: float, failed: bool) -> None:
            seconds = time.perf_counter() - started
            if not failed:
                record("OK", seconds)
                return
            code = context.code()
            record(code.name if code else "UNKNOWN", seconds)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                failed = True
                try:
                    response = await inner(request, context)
                    failed = False
                    return response
                finally:
                    finish(context, started, failed)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                failed = True
                try:
                    async for item in inner_stream(request, context):
                        yield item
                    failed = False
                finally:
                    finish(context, started, failed)

            # grpc's health Watch is a coroutine that calls context.write, not a generator.
            async def writing_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                failed = True
                try:
                    result = await inner_stream(request, context)
                    failed = False
                    return result
                finally:
                    finish(context, started, failed)

            stream = unary_stream if inspect.isasyncgenfunction(inner_stream) else writing_stream
            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler  # bidi streams: KV.Stream counts each operation (OperationRecorder)


class _NodeStateExporter(Collector):
    """Gauges read from the node's view at scrape time (in the HTTP server's thread)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    def collect(self) -> Iterator[Any]:
        view = self._view
        peers = view.peer_stats()
        lag_entries = GaugeMetricFamily(
            "edgekv_replication_lag_entries", "Local log entries a peer has not acknowledged.",
            labels=["peer"],
        )  # fmt: skip
        lag_seconds = GaugeMetricFamily(
            "edgekv_replication_lag_seconds",
            "Age of the oldest local write a peer has not acknowledged.", labels=["peer"],
        )  # fmt: skip
        inflight = GaugeMetricFamily(
            "edgekv_replication_inflight_bytes", "Bytes sent to a peer and not yet acknowledged.",
            labels=["peer"],
        )  # fmt: skip
        connected = GaugeMetricFamily(
            "edgekv_replication_connected", "1 if the replication stream to a peer is up.",
            labels=["peer"],
        )  # fmt: skip
        for peer in peers:
            lag_entries.add_metric([peer.peer_id], peer.lag_entries)
            lag_seconds.add_metric([peer.peer_id], peer.lag_seconds)
            inflight.add_metric([peer.peer_id], peer.inflight_bytes)
            connected.add_metric([peer.peer_id], 1.0 if peer.connected else 0.0)
        yield from (lag_entries, lag_seconds, inflight, connected)
        reachable = GaugeMetricFamily(
            "edgekv_peer_reachable", "1 if heartbeats to a peer succeed.", labels=["peer"]
        )
        rtt = GaugeMetricFamily(
            "edgekv_peer_rtt_seconds", "Smoothed heartbeat round-trip time.", labels=["peer"]
        )
        for peer in peers:
            reachable.add_metric([peer.peer_id], 1.0 if peer.reachable else 0.0)
            rtt.add_metric([peer.peer_id], peer.rtt_ms / 1000.0)
        yield from (reachable, rtt)
        yield from repair_families(peers, view.repair_pacing())  # server/repair_metrics.py
        gc = view.collector_stats()
        yield CounterMetricFamily(
            "edgekv_gc_collected_records",
            "Tombstones and expired records removed for good.",
            value=gc.collected_total,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_gc_horizon_timestamp_seconds",
            "Records dead since before this are collected (0: nothing collected yet); "
            "it trails now by tombstone_grace_s unless a peer holds it back.",
            value=gc.horizon_ms / 1000.0,
        )  # fmt: skip
        purge = view.purge_stats()
        yield CounterMetricFamily(
            "edgekv_purged_records",
            "Records erased because this node may no longer hold them (placement rules "
            "changed), after a node allowed to hold them confirmed it does.",
            value=purge.removed_total,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_purge_pending_records",
            "Records this node may no longer hold that are still here, unserved, until "
            "an owner confirms it holds them.",
            value=purge.kept,
        )  # fmt: skip
        engine = view.engine_stats()
        size = GaugeMetricFamily(
            "edgekv_rocksdb_size_bytes", "RocksDB SST files plus memtables.", labels=["kind"]
        )
        size.add_metric(["sst"], engine.sst_bytes)
        size.add_metric(["memtable"], engine.memtable_bytes)
        yield size
        yield GaugeMetricFamily(
            "edgekv_keys_estimate", "RocksDB's estimate of stored records.",
            value=engine.key_count,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_log_last_seq", "Sequence number of the newest local write.",
            value=engine.last_seq,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_max_skew_seen_seconds",
            "Furthest a peer's timestamp has been ahead of this node's wall clock.",
            value=engine.max_skew_seen_ms / 1000.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_max_skew_allowed_seconds",
            "Timestamps further ahead than this are refused (max_clock_skew_ms).",
            value=engine.max_skew_allowed_ms / 1000.0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_clock_skew_rejections", "Remote timestamps refused for clock skew.",
            value=engine.skew_rejections,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_storage_degraded",
            "1 while this node refuses writes because RocksDB failed one (a full disk); "
            "health says NOT_SERVING until space is back and RocksDB is reopened in place.",
            value=int(engine.storage_degraded),
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_storage_reopens", "Times RocksDB was reopened in place after a failed "
            "write (a full disk) and took writes again.", value=engine.storage_reopens,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_storage_refused_writes", "Writes refused while the store was degraded.",
            value=engine.storage_refused_writes,
        )  # fmt: skip
        calls, records = view.peer_refusals()
        refused = CounterMetricFamily(
            "edgekv_peer_refused", "Peer calls refused: no valid credential, another node's "
            "credential, or a placement or keys the caller's region may not hold.",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in calls.items():
            refused.add_metric([reason], count)
        dropped = CounterMetricFamily(
            "edgekv_peer_refused_records", "Records received from peers and not applied: "
            "this region or the sender's may not hold them, or they were not asked for.",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in records.items():
            dropped.add_metric([reason], count)
        yield from (refused, dropped)
        yield GaugeMetricFamily(
            "edgekv_clock_fenced",
            "1 while this node refuses writes because its clock runs more than "
            "max_clock_skew_ms ahead of the median of its reachable peers.",
            value=int(engine.clock_fenced),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_ahead_seconds",
            "How far this node's next timestamp runs ahead of the median reachable peer's "
            "clock, from heartbeats (negative: behind; 0 with no reachable peer).",
            value=engine.clock_ahead_ms / 1000.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_hlc_lead_seconds",
            "How far the hybrid clock's high-water mark is ahead of the local wall clock "
            "(after a clock is stepped back, timestamps keep counting from it).",
            value=engine.hlc_lead_ms / 1000.0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_clock_fenced_writes", "Writes refused while the clock was fenced.",
            value=engine.fenced_writes,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_quarantined_records",
            "Received records set aside because their timestamps run too far ahead of "
            "this node's clock; applied once it catches up.",
            value=engine.quarantined_held,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_clock_quarantined_records_set_aside",
            "Received records set aside for clock skew since start.",
            value=engine.quarantined_total,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_forwarded_calls", "Calls forwarded to a node allowed to hold the key.",
            value=view.forwarded_calls,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_watch_streams", "Watch subscriptions open on this node's change feed.",
            value=view.watch_streams,
        )  # fmt: skip
        refusals = CounterMetricFamily(
            "edgekv_client_limit_refusals",
            "Client calls refused with RESOURCE_EXHAUSTED by a per-client limit.",
            labels=["limit"],
        )
        for limit, count in view.client_refusals().items():
            refusals.add_metric([limit], count)
        yield refusals
        yield GaugeMetricFamily(
            "edgekv_http_inflight",
            "Calls and Watch streams in progress on the HTTP door (0 without http_listen).",
            value=view.http_inflight,
        )  # fmt: skip
