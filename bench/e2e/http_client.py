"""The SDK over a node's HTTP door: its HTTP/1.1 transports against the ones they replaced.

Run: .venv/bin/python -m bench.e2e.http_client [--samples 3000] [--rounds 3] [--loop uvloop]
     [--json out.json]

Starts one `edgekv serve` with http_listen, preloads 1000 keys of 100 bytes,
and measures one sequential caller per path, the paths shuffled and
interleaved over --rounds rounds so that machine noise hits them alike:

* ``sdk get`` / ``sdk put``: ``AsyncClient("http://...")`` get and put, with
  its unary calls on the lean asyncio HTTP/1.1 pool (client/_http1.py,
  ``new``) or on connectrpc's generated client over pyqwest (``old``, what it
  used before);
* ``sync get`` / ``sync put``: the blocking ``Client("http://...")``, on the
  lean blocking pool (client/_http1_sync.py, ``new``) or on connectrpc's
  blocking client over pyqwest (``old``); called on the loop's thread, so
  nothing else runs meanwhile;
* ``POST Get`` through each HTTP client alone (a prebuilt Connect unary Get,
  its answer decoded): the asyncio pool (``http1``), the blocking pool
  (``http1 sync``), pyqwest, aiohttp (when installed; not a dependency) and
  the blocking stdlib http.client (the blocking ones on the loop's thread).

For each: p50/p99 (µs), the client's CPU per call (this process, every
thread: pyqwest runs its I/O on threads of its own) and the node's (user +
system time from /proc/<pid>/stat). Nothing is pinned. Figures move 10-30%
between runs on a shared machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.e2e.http_door import cpu_s
from edgekv import AsyncClient, Client
from edgekv.client._connect import READ_MAX_BYTES
from edgekv.client._http1 import Http1Pool
from edgekv.client._http1_sync import Http1SyncPool
from edgekv.local.launcher import start_node, write_cluster_file
from edgekv.v1 import kv_pb2

KEYS = [f"hc/{i:05d}".encode() for i in range(1000)]
VALUE = b"v" * 100
PATH = "/edgekv.v1.KV/Get"
HEADERS = {"content-type": "application/proto", "connect-protocol-version": "1"}

Call = Callable[[int], Awaitable[Any]]


async def sdk_paths(url: str) -> tuple[dict[str, Call], list[Any]]:
    new = AsyncClient(url, discover=False)
    old = AsyncClient(url, discover=False)
    old._connect_doors()._unary = lambda url, service: None  # type: ignore[method-assign]
    for i, key in enumerate(KEYS):
        await (new if i % 2 else old).put(key, VALUE)
    calls: dict[str, Call] = {}
    for side, client in (("new", new), ("old", old)):

        def get(i: int, c: AsyncClient = client) -> Awaitable[Any]:
            return c.get(KEYS[i % len(KEYS)])

        def put(i: int, c: AsyncClient = client) -> Awaitable[Any]:
            return c.put(KEYS[i % len(KEYS)], VALUE)

        calls[f"sdk get {side}"], calls[f"sdk put {side}"] = get, put
    closers: list[Any] = [new.close, old.close]
    for side in ("new", "old"):
        blocking = Client(url, discover=False)
        if side == "old":
            blocking._connect_doors()._unary = lambda url, service: None  # type: ignore[method-assign]
        closers.append(blocking.close)

        async def sync_get(i: int, c: Client = blocking) -> Any:
            return c.get(KEYS[i % len(KEYS)])

        async def sync_put(i: int, c: Client = blocking) -> Any:
            return c.put(KEYS[i % len(KEYS)], VALUE)

        calls[f"sync get {side}"], calls[f"sync put {side}"] = sync_get, sync_put
    return calls, closers


def post_paths(url: str, endpoint: str) -> tuple[dict[str, Call], list[Any]]:
    bodies = [kv_pb2.GetRequest(key=k).SerializeToString() for k in KEYS]
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {endpoint}\r\ncontent-type: application/proto\r\n"
        "connect-protocol-version: 1\r\n"
    ).encode()
    requests = [head + b"content-length: %d\r\n\r\n" % len(b) + b for b in bodies]
    pool = Http1Pool(url, None, READ_MAX_BYTES)
    sync_pool = Http1SyncPool(url, None, READ_MAX_BYTES)

    async def lean(i: int) -> Any:
        status, _, _, body = await pool.post(requests[i % len(requests)], 5.0, True)
        assert status == 200
        return kv_pb2.GetResponse.FromString(body)

    async def lean_sync(i: int) -> Any:
        status, _, _, body = sync_pool.post(requests[i % len(requests)], 5.0, True)
        assert status == 200
        return kv_pb2.GetResponse.FromString(body)

    from pyqwest import Client, HTTPTransport

    transport = HTTPTransport()
    qwest = Client(transport)

    async def pyqwest(i: int) -> Any:
        answer = await qwest.post(url + PATH, headers=HEADERS, content=bodies[i % len(bodies)])
        assert answer.status == 200
        return kv_pb2.GetResponse.FromString(answer.content)

    host, port = endpoint.rsplit(":", 1)
    stdlib = http.client.HTTPConnection(host, int(port))

    async def blocking(i: int) -> Any:
        stdlib.request("POST", PATH, bodies[i % len(bodies)], HEADERS)
        answer = stdlib.getresponse()
        data = answer.read()
        assert answer.status == 200
        return kv_pb2.GetResponse.FromString(data)

    calls: dict[str, Call] = {
        "POST Get http1": lean,
        "POST Get http1 sync": lean_sync,
        "POST Get pyqwest": pyqwest,
        "POST Get http.client": blocking,
    }
    closers: list[Any] = [pool.close, sync_pool.close, transport.aclose, stdlib.close]
    try:
        import aiohttp
    except ImportError:
        print("POST Get aiohttp: skipped (aiohttp is not installed; pip install aiohttp)")
        return calls, closers
    session: Any = None

    async def aio(i: int) -> Any:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(url)
            closers.append(session.close)
        async with session.post(PATH, data=bodies[i % len(bodies)], headers=HEADERS) as answer:
            data = await answer.read()
            assert answer.status == 200
        return kv_pb2.GetResponse.FromString(data)

    calls["POST Get aiohttp"] = aio
    return calls, closers


async def measure(call: Call, n: int, pid: int) -> tuple[list[float], float, float]:
    """Latencies (µs) of ``n`` calls, and the client and server CPU (µs) they cost in all."""
    for i in range(min(200, n)):  # warm the connection and the code paths
        await call(i)
    lat = []
    client0, server0 = time.process_time(), cpu_s(pid)
    for i in range(n):
        t0 = time.perf_counter_ns()
        await call(i)
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, (time.process_time() - client0) * 1e6, (cpu_s(pid) - server0) * 1e6


async def run(url: str, endpoint: str, pid: int, args: Any) -> dict[str, dict[str, float]]:
    sdk, sdk_closers = await sdk_paths(url)
    posts, post_closers = post_paths(url, endpoint)
    calls = {**sdk, **posts}
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [0.0, 0.0] for name in calls}
    order = list(calls)
    try:
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                lat, client_us, server_us = await measure(calls[name], args.samples, pid)
                latencies[name] += lat
                cpu[name][0] += client_us
                cpu[name][1] += server_us
    finally:
        for close in sdk_closers + post_closers:
            done = close()
            if asyncio.iscoroutine(done) or isinstance(done, asyncio.Future):
                await done
    figures = {}
    for name in sorted(calls):
        lat = sorted(latencies[name])
        n = len(lat)
        figures[name] = {
            "p50_us": lat[n // 2],
            "p99_us": lat[min(n - 1, int(n * 0.99))],
            "client_cpu_us": cpu[name][0] / n,
            "server_cpu_us": cpu[name][1] / n,
        }
    return figures


def report(figures: dict[str, dict[str, float]]) -> None:
    print(f"{'path':<22} {'p50 us':>8} {'p99 us':>8} {'client CPU us':>14} {'node CPU us':>12}")
    for name, f in figures.items():
        print(
            f"{name:<22} {f['p50_us']:8.1f} {f['p99_us']:8.1f} {f['client_cpu_us']:14.1f} "
            f"{f['server_cpu_us']:12.1f}"
        )
    for sdk, verb in [(s, v) for s in ("sdk", "sync") for v in ("get", "put")]:
        new, old = figures[f"{sdk} {verb} new"], figures[f"{sdk} {verb} old"]
        print(
            f"{sdk} {verb} new / old: p50 x{new['p50_us'] / old['p50_us']:.2f}, "
            f"p99 x{new['p99_us'] / old['p99_us']:.2f}, "
            f"client CPU x{new['client_cpu_us'] / old['client_cpu_us']:.2f}"
        )
    base = figures["POST Get http1"]
    for name, f in figures.items():
        if name.startswith("POST Get ") and f is not base:
            print(
                f"{name} / http1: p50 x{f['p50_us'] / base['p50_us']:.2f}, "
                f"client CPU x{f['client_cpu_us'] / base['client_cpu_us']:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3000, help="calls per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-http-client-") as tmp:
        node = start_node(write_cluster_file(tmp, http=True), "node-1", log_level="warning")
        try:
            url = f"http://{node.http_endpoint}"
            coro = run(url, node.http_endpoint, node.pid, args)
            if args.loop == "uvloop":
                import uvloop

                figures = uvloop.run(coro)
            else:
                figures = asyncio.run(coro)
        finally:
            node.stop()
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
