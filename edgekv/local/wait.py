"""Polling with a deadline, for launchers, demos and tests (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# A node's live data under a prefix: key -> (value, timestamp, origin).
Dump = dict[bytes, tuple[bytes, int, str]]


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = 0.01,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions from the predicate count as "not yet". Raises TimeoutError naming
    ``what`` and the last exception seen when ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}{detail}")
        time.sleep(interval_s)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = 0.01,
) -> T:
    """``wait_until`` for code on an event loop: the loop keeps running between polls.

    ``predicate`` may be a plain function or return an awaitable. For nodes that
    serve on the same loop as the test (edgekv.local.inprocess), where a blocking
    wait would stall the very nodes it waits for.
    """
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}{detail}")
        await asyncio.sleep(interval_s)


def dump_node(endpoint: str, prefix: bytes = b"", timeout_s: float = 10.0) -> Dump:
    """Every live key under ``prefix`` on one node: key -> (value, timestamp, origin)."""
    import grpc

    from edgekv.v1 import kv_pb2, kv_pb2_grpc

    out: Dump = {}
    with grpc.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        token = b""
        while True:
            page = stub.Scan(
                kv_pb2.ScanRequest(prefix=prefix, limit=5000, page_token=token), timeout=timeout_s
            )
            for item in page.items:
                out[item.key] = (item.value, item.version.timestamp, item.version.origin)
            token = page.next_page_token
            if not token:
                return out


def converged(endpoints: dict[str, str], prefix: bytes = b"") -> tuple[bool, str]:
    """Whether every node holds the same data under ``prefix``, and a diff if not."""
    problems = diff_dumps({name: dump_node(ep, prefix) for name, ep in endpoints.items()})
    return (not problems, problems)


def diff_dumps(dumps: Mapping[str, Dump]) -> str:
    """How the nodes' dumps differ from the first node's (by name); "" when all are equal."""
    names = sorted(dumps)
    first = dumps[names[0]]
    problems = []
    for name in names[1:]:
        other = dumps[name]
        missing = first.keys() - other.keys()
        extra = other.keys() - first.keys()
        differ = [k for k in first.keys() & other.keys() if first[k] != other[k]]
        if missing or extra or differ:
            problems.append(
                f"{name} vs {names[0]}: {len(missing)} missing, {len(extra)} extra, "
                f"{len(differ)} different (e.g. {sorted(missing | extra | set(differ))[:3]!r})"
            )
    return "; ".join(problems)


def assert_converged(
    endpoints: dict[str, str], prefix: bytes = b"", *, timeout_s: float = 30.0
) -> Dump:
    """Poll until all nodes hold identical data under ``prefix``; return it.

    Raises AssertionError with the differences at the deadline (like raft's EnsureSame).
    """
    deadline = time.monotonic() + timeout_s
    detail = ""
    while time.monotonic() < deadline:
        try:
            ok, detail = converged(endpoints, prefix)
        except Exception as exc:  # a node may still be starting
            ok, detail = False, repr(exc)
        if ok:
            return dump_node(next(iter(endpoints.values())), prefix)
        time.sleep(0.1)
    raise AssertionError(f"nodes did not converge within {timeout_s}s: {detail}")


def scrape_metrics(
    port: int, timeout_s: float = 5.0
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A node's Prometheus scrape: sample name -> [(labels, value), ...]."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def describe_tasks() -> str:
    """Every other task on the loop, where it started and where it waits: for hang reports."""
    lines = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        chain = []
        awaited: Any = task.get_coro()
        while awaited is not None:  # follow the await chain down to the innermost frame
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                chain.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        # The outermost frame says what the task is, the innermost where it waits.
        shown = chain if len(chain) <= 4 else [chain[0], "...", *chain[-3:]]
        lines.append(f"{task.get_name()} at {' > '.join(shown) or '?'}")
    return "; ".join(sorted(lines)) or "none"
