"""Per-method call counts and latency of the gRPC port, kept in plain ints on the event loop.

The request path records a call with a dict update, a bisect and two additions
(:meth:`MethodStats.record`); prometheus_client's Counter and Histogram cost a
lock per counter and a Python loop over the buckets on every call, a measurable
share of a local get's server CPU (README, "Where a get's server CPU goes").
:class:`CallMetrics` turns the ints into the same series at scrape time:
``edgekv_requests_total{service,method,code}`` and the histogram
``edgekv_request_duration_seconds{service,method}``.

Only the node's event loop writes; the scrape thread reads. A scrape may see a
call counted in the total and not yet in a bucket (one increment apart), never
a count going back.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class MethodStats:
    """Calls of one (service, method): count per status code, latency buckets, sum."""

    __slots__ = ("_bounds", "buckets", "codes", "seconds")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.seconds = 0.0

    def record(self, code: str, seconds: float) -> None:
        """Count one call that ended with status ``code`` (a StatusCode name) after ``seconds``."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self.seconds += seconds


class CallMetrics(Collector):
    """Every method's :class:`MethodStats`, exported as Prometheus series when scraped."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._methods: dict[tuple[str, str], MethodStats] = {}

    def method(self, service: str, method: str) -> MethodStats:
        """The stats of ``service``/``method`` (created on first use; keep the object)."""
        stats = self._methods.get((service, method))
        if stats is None:
            stats = self._methods[(service, method)] = MethodStats(self._bounds)
        return stats

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "edgekv_requests",
            "gRPC calls served, by service, method and status code.",
            labels=("service", "method", "code"),
        )
        latency = HistogramMetricFamily(
            "edgekv_request_duration_seconds",
            "gRPC call latency on the server, by service and method.",
            labels=("service", "method"),
        )
        for (service, method), stats in list(self._methods.items()):
            for code, count in list(stats.codes.items()):
                requests.add_metric((service, method, code), count)
            cumulative, buckets = 0, []
            bounds = (*map(floatToGoString, self._bounds), "+Inf")
            for bound, count in zip(bounds, list(stats.buckets), strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric((service, method), buckets, stats.seconds)
        yield requests
        yield latency
