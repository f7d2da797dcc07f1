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
        self.codes: dict[str | int, int] = {}  # by gRPC code name or HTTP status
        self.buckets = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.seconds = 0.0

    def record(self, code: str | int, seconds: float) -> None:
        """Count one call that ended with status ``code`` (a StatusCode name, or an HTTP
        status) after ``seconds``."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self.seconds += seconds


class CallMetrics(Collector):
    """Every method's :class:`MethodStats`, exported as Prometheus series when scraped.

    By default the gRPC port's series; ``requests`` and ``latency`` (name, help)
    and ``labels`` (what a key is, then the label of the status) name others:
    the HTTP door's ``edgekv_http_requests_total{route,status}`` and
    ``edgekv_http_request_duration_seconds{route}`` (metrics.py).
    """

    def __init__(
        self,
        bounds: Sequence[float],
        requests: tuple[str, str] = ("edgekv_requests", "gRPC calls served, by service, method "
                                     "and status code."),
        latency: tuple[str, str] = ("edgekv_request_duration_seconds", "gRPC call latency on "
                                    "the server, by service and method."),
        labels: tuple[str, ...] = ("service", "method", "code"),
    ) -> None:  # fmt: skip
        self._bounds = tuple(bounds)
        self._requests = requests
        self._latency = latency
        self._labels = labels
        self._methods: dict[tuple[str, ...], MethodStats] = {}

    def method(self, service: str, method: str) -> MethodStats:
        """The stats of ``service``/``method`` (created on first use; keep the object)."""
        return self.stats(service, method)

    def stats(self, *key: str) -> MethodStats:
        """The stats of ``key`` (the label values but the status; created on first use)."""
        stats = self._methods.get(key)
        if stats is None:
            stats = self._methods[key] = MethodStats(self._bounds)
        return stats

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(*self._requests, labels=self._labels)
        latency = HistogramMetricFamily(*self._latency, labels=self._labels[:-1])
        bounds = (*map(floatToGoString, self._bounds), "+Inf")
        for key, stats in list(self._methods.items()):
            for code, count in list(stats.codes.items()):
                requests.add_metric((*key, str(code)), count)
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, list(stats.buckets), strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(key, buckets, stats.seconds)
        yield requests
        yield latency
