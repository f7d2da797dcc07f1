"""Every Prometheus metric of a node, defined once, served on ``metrics_listen``.

Request counts and latency histograms come from a gRPC interceptor (per
service, method and status code). Everything else is read from the node's live
state when Prometheus scrapes, so the request path pays nothing for it:
replication lag and in-flight bytes per peer, peer reachability and RTT,
anti-entropy repairs, RocksDB size, the clock skew seen from peers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edgekv.server.node import Node

# Latency buckets from 100 µs (a local read) to 10 s (a forwarded call on a bad day).
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)  # fmt: skip


class NodeMetrics:
    """The metrics of one node, in its own registry (several nodes may share a process)."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgekv_requests",
            "gRPC calls served, by service, method and status code.",
            ("service", "method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgekv_request_duration_seconds",
            "gRPC call latency on the server, by service and method.",
            ("service", "method"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NodeStateCollector(node))
        self._server: Any = None

    def serve(self, address: str) -> int:
        """Serve /metrics over HTTP on ``address`` (host:port); returns the bound port."""
        host, _, port = address.rpartition(":")
        result = start_http_server(int(port), host.strip("[]") or "0.0.0.0", self.registry)
        self._server = result[0] if isinstance(result, tuple) else result
        return int(self._server.server_port) if self._server is not None else int(port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _MetricsInterceptor(self)


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
        service, _, method = method_path.lstrip("/").rpartition("/")
        wrapped = self._wrap(handler, service.rsplit(".", 1)[-1], method)
        self._wrapped[method_path] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, service: str, method: str) -> Any:
        observe = self._metrics.latency.labels(service, method).observe
        requests = self._metrics.requests
        ok = requests.labels(service, method, "OK")

        def finish(context: grpc.aio.ServicerContext, started: float, failed: bool) -> None:
            observe(time.perf_counter() - started)
            if not failed:
                ok.inc()
                return
            code = context.code()
            requests.labels(service, method, code.name if code else "UNKNOWN").inc()

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

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler  # bidi streams (peer port, reflection): not timed


class _NodeStateCollector(Collector):
    """Gauges read from the node's live state at scrape time."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        node = self._node
        engine = node.engine
        if engine is None:
            return
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
        for peer, sender in node.senders.items():
            lag_entries.add_metric([peer], sender.lag_entries())
            lag_seconds.add_metric([peer], sender.lag_seconds())
            inflight.add_metric([peer], sender.inflight_bytes)
            connected.add_metric([peer], 1.0 if sender.connected else 0.0)
        yield from (lag_entries, lag_seconds, inflight, connected)
        reachable = GaugeMetricFamily(
            "edgekv_peer_reachable", "1 if heartbeats to a peer succeed.", labels=["peer"]
        )
        rtt = GaugeMetricFamily(
            "edgekv_peer_rtt_seconds", "Smoothed heartbeat round-trip time.", labels=["peer"]
        )
        if node.membership is not None:
            for peer, health in node.membership.peers.items():
                reachable.add_metric([peer], 1.0 if health.reachable else 0.0)
                rtt.add_metric([peer], health.rtt_ms / 1000.0)
        yield from (reachable, rtt)
        repairs = CounterMetricFamily(
            "edgekv_antientropy_repaired_records",
            "Records anti-entropy pulled from or pushed to a peer.", labels=["peer", "direction"],
        )  # fmt: skip
        syncs = CounterMetricFamily(
            "edgekv_antientropy_syncs", "Completed anti-entropy syncs with a peer.", labels=["peer"]
        )
        synced_from = GaugeMetricFamily(
            "edgekv_antientropy_synced_from_timestamp_seconds",
            "Start of the last complete anti-entropy sync with a peer (0: none since start).",
            labels=["peer"],
        )  # fmt: skip
        if node.antientropy is not None:
            for peer, state in node.antientropy.state.items():
                repairs.add_metric([peer, "pulled"], state.pulled_total)
                repairs.add_metric([peer, "pushed"], state.pushed_total)
                syncs.add_metric([peer], state.syncs)
                synced_from.add_metric([peer], state.synced_from_ms / 1000.0)
        yield from (repairs, syncs, synced_from)
        if node.collector is not None:
            yield CounterMetricFamily(
                "edgekv_gc_collected_records",
                "Tombstones and expired records removed for good.",
                value=node.collector.collected_total,
            )  # fmt: skip
            yield GaugeMetricFamily(
                "edgekv_gc_horizon_timestamp_seconds",
                "Records dead since before this are collected (0: nothing collected yet); "
                "it trails now by tombstone_grace_s unless a peer holds it back.",
                value=node.collector.horizon_ms / 1000.0,
            )  # fmt: skip
        size = GaugeMetricFamily(
            "edgekv_rocksdb_size_bytes", "RocksDB SST files plus memtables.", labels=["kind"]
        )
        size.add_metric(["sst"], engine.property_int("rocksdb.total-sst-files-size"))
        size.add_metric(["memtable"], engine.property_int("rocksdb.cur-size-all-mem-tables"))
        yield size
        yield GaugeMetricFamily(
            "edgekv_keys_estimate", "RocksDB's estimate of stored records.",
            value=engine.approximate_key_count(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_log_last_seq", "Sequence number of the newest local write.",
            value=engine.last_seq,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_max_skew_seen_seconds",
            "Furthest a peer's timestamp has been ahead of this node's wall clock.",
            value=engine.clock.max_skew_seen_ms / 1000.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgekv_clock_max_skew_allowed_seconds",
            "Timestamps further ahead than this are refused (max_clock_skew_ms).",
            value=engine.clock.max_skew_ms / 1000.0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_clock_skew_rejections", "Remote timestamps refused for clock skew.",
            value=engine.clock.rejected_count,
        )  # fmt: skip
        if node.router is not None:
            yield CounterMetricFamily(
                "edgekv_forwarded_calls", "Calls forwarded to a node allowed to hold the key.",
                value=node.router.forwarded_calls,
            )  # fmt: skip
