"""The gRPC port's per-call machinery: one interceptor hop (WrapOnce), the port-wide
call limit counted by the limiter, and request metrics kept in plain ints."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgekv.errors import ResourceExhausted
from edgekv.server.call_metrics import CallMetrics
from edgekv.server.interceptors import InflightLimiter, WrapOnce


def test_port_calls_beyond_max_concurrent_rpcs_are_refused() -> None:
    limiter = InflightLimiter(10, max_port_calls=2)
    limiter.enter_port()
    limiter.enter_port()
    with pytest.raises(
        ResourceExhausted,
        match=r"^the node has 2 gRPC calls in progress; the limit is 2 \(max_concurrent_rpcs\)$",
    ):
        limiter.enter_port()
    assert limiter.rejected_port == 1


async def test_wrap_once_applies_wrappers_in_interceptor_order_once_per_method() -> None:
    seen: list[str] = []

    def wrapper(name: str) -> Any:
        def wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            seen.append(f"{name}:{method}")
            inner = handler.unary_unary

            async def behavior(request: Any, context: Any) -> Any:
                return f"{name}({await inner(request, context)})"

            return grpc.unary_unary_rpc_method_handler(behavior)

        return wrap

    async def servicer(request: Any, context: Any) -> Any:
        return request

    base = grpc.unary_unary_rpc_method_handler(servicer)
    asked: list[str] = []

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        asked.append(details.method)
        return base

    once = WrapOnce(wrapper("outer"), wrapper("inner"))
    details: Any = type("Details", (), {"method": "/s.S/M", "invocation_metadata": ()})()
    first = await once.intercept_service(continuation, details)
    again = await once.intercept_service(continuation, details)
    assert first is again and asked == ["/s.S/M"]
    assert seen == ["inner:/s.S/M", "outer:/s.S/M"]  # innermost wrapped first
    assert await first.unary_unary("x", None) == "outer(inner(x))"


def test_call_metrics_export_counts_and_cumulative_buckets() -> None:
    calls = CallMetrics((0.001, 0.01))
    registry = CollectorRegistry()
    registry.register(calls)
    get = calls.method("KV", "Get")
    assert calls.method("KV", "Get") is get
    get.record("OK", 0.0005)
    get.record("OK", 0.005)
    get.record("INVALID_ARGUMENT", 5.0)
    text = generate_latest(registry).decode()
    assert 'edgekv_requests_total{code="OK",method="Get",service="KV"} 2.0' in text
    assert 'edgekv_requests_total{code="INVALID_ARGUMENT",method="Get",service="KV"} 1.0' in text
    for le, count in (("0.001", 1), ("0.01", 2), ("+Inf", 3)):
        assert (
            f'edgekv_request_duration_seconds_bucket{{le="{le}",method="Get",service="KV"}} '
            f"{count}.0"
        ) in text
    assert 'edgekv_request_duration_seconds_count{method="Get",service="KV"} 3.0' in text
