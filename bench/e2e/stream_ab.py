"""Streamed get of two commits, in one run: --before's node and SDK stream next to this tree's.

Run: .venv/bin/python -m bench.e2e.stream_ab --before REV [--samples 2000] [--rounds 6]

Exports commit REV as bench/e2e/unary_ab.py does and starts one `edgekv serve`
from each tree (both pinned to CPU 1, this process to CPU 0). Measures, with
the paths shuffled and interleaved over --rounds rounds of --samples gets:

* ``node``: a bare KV.Stream get ping-pong on grpc.aio (one coroutine writes a
  StreamRequest and reads its answer): the node's side of a streamed get;
* ``sdk``: the SDK's stream multiplexer (``AsyncOpStream.call``, each tree's own
  edgekv/client/_stream.py) against that tree's node: what a streamed
  AsyncClient get adds to it, without the client's routing and retries;
* ``bare-sync`` and ``sync``: the same two on grpc's blocking stack (a queue feeds
  the request iterator, the caller reads the answer) and the blocking Client's
  multiplexer (each tree's ``SyncOpStream``, from _stream_sync.py or _stream.py).

For each: p50/p99 and the node's CPU per get, and the after/before ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import queue
import random
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import uvloop

from bench.e2e.http_door import cpu_s
from bench.e2e.load import percentiles, pin
from bench.e2e.unary_ab import ROOT, export, start_from
from edgekv import Client, Put
from edgekv.local.launcher import write_cluster_file
from edgekv.v1 import kv_pb2, kv_pb2_grpc

KEYS = [b"sab%05d" % i for i in range(1000)]


def stream_module(tree: Path) -> ModuleType:
    """``tree``'s edgekv/client/_stream.py, loaded under its own name."""
    path = tree / "edgekv/client/_stream.py"
    spec = importlib.util.spec_from_file_location(f"_stream_{abs(hash(tree))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync_stream_class(tree: Path) -> Any:
    """``tree``'s SyncOpStream: from edgekv/client/_stream_sync.py where there is one."""
    path = tree / "edgekv/client/_stream_sync.py"
    if not path.exists():
        return stream_module(tree).SyncOpStream
    spec = importlib.util.spec_from_file_location(f"_stream_sync_{abs(hash(tree))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # It imports edgekv.client._stream: the one of its own tree, not this one's.
    name, own = "edgekv.client._stream", stream_module(tree)
    this = sys.modules[name]
    sys.modules[name] = own
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules[name] = this
    return module.SyncOpStream


def sync_calls(endpoint: str, tree: Path, closers: list[Any]) -> tuple[Any, Any]:
    """(bare ping-pong, SyncOpStream get) on grpc's blocking stack to ``endpoint``."""
    channel = grpc.insecure_channel(endpoint)
    outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def requests() -> Any:
        while (msg := outbox.get()) is not None:
            yield msg

    responses = channel.stream_stream("/edgekv.v1.KV/Stream")(requests())
    wire = [
        kv_pb2.StreamRequest(
            id=1, timeout_ms=5000, get=kv_pb2.GetRequest(key=k)
        ).SerializeToString()
        for k in KEYS
    ]

    def bare(i: int) -> Any:
        outbox.put(wire[i % len(wire)])
        return next(responses)

    stream = sync_stream_class(tree)(kv_pb2_grpc.KVStub(channel), None)
    get = stream.method("Get")
    gets = [kv_pb2.GetRequest(key=k) for k in KEYS]

    def sdk(i: int) -> Any:
        return get(gets[i % len(gets)], timeout=5.0)

    closers += [lambda: outbox.put(None), stream.close, channel.close]
    return bare, sdk


async def measure(
    endpoints: dict[str, str], pids: dict[str, int], trees: dict[str, Path], args: Any
) -> dict[str, tuple[list[float], float]]:
    calls: dict[str, Any] = {}
    closers: list[Any] = []
    for side, endpoint in endpoints.items():
        channel = grpc.aio.insecure_channel(endpoint)
        raw = channel.stream_stream("/edgekv.v1.KV/Stream")()
        ops = [
            kv_pb2.StreamRequest(id=1, timeout_ms=5000, get=kv_pb2.GetRequest(key=k)) for k in KEYS
        ]
        wire = [op.SerializeToString() for op in ops]

        async def node(i: int, raw: Any = raw, wire: list[bytes] = wire) -> Any:
            await raw.write(wire[i % len(wire)])
            return await raw.read()

        stream = stream_module(trees[side]).AsyncOpStream(kv_pb2_grpc.KVStub(channel), None)
        get = stream.method("Get")
        requests = [kv_pb2.GetRequest(key=k) for k in KEYS]

        async def sdk(i: int, get: Any = get, requests: list[Any] = requests) -> Any:
            return await get(requests[i % len(requests)], timeout=5.0)

        calls[f"node {side}"], calls[f"sdk {side}"] = node, sdk
        closers += [raw.cancel, stream.close, channel.close]
        bare, sync = sync_calls(endpoint, trees[side], closers)
        calls[f"bare-sync {side}"], calls[f"sync {side}"] = _awaitable(bare), _awaitable(sync)
    out: dict[str, tuple[list[float], float]] = {name: ([], 0.0) for name in calls}
    for call in calls.values():  # warm up
        for i in range(300):
            await call(i)
    order = list(calls)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            pid = pids[name.split()[1]]
            lat, before = out[name][0], cpu_s(pid)
            for i in range(args.samples):
                t0 = time.perf_counter_ns()
                await calls[name](i)
                lat.append((time.perf_counter_ns() - t0) / 1000.0)
            out[name] = (lat, out[name][1] + (cpu_s(pid) - before) * 1e6)
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    return out


def _awaitable(call: Any) -> Any:
    """A blocking call measured by the same loop: nothing else runs meanwhile."""

    async def run(i: int) -> Any:
        return call(i)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-stream-ab-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"before": tmp / "before", "after": ROOT}
        trees["before"].mkdir()
        export(args.before, trees["before"])
        nodes = {
            side: start_from(tree, write_cluster_file(tmp / side)) for side, tree in trees.items()
        }
        try:
            for node in nodes.values():
                pin(node.pid, 1)
                with Client(node.endpoint, discover=False, transport="unary") as client:
                    client.write([Put(k, b"v" * 100) for k in KEYS])
            pin(0, 0)
            endpoints = {side: node.endpoint for side, node in nodes.items()}
            pids = {side: node.pid for side, node in nodes.items()}
            figures = uvloop.run(measure(endpoints, pids, trees, args))
        finally:
            for node in nodes.values():
                node.stop()
    print(f"streamed get, {args.rounds} x {args.samples} per path, nodes on CPU 1; "
          f"before = {args.before}, after = this tree")  # fmt: skip
    summary = {}
    for name, (lat, cpu_us) in figures.items():
        p = percentiles(lat)
        summary[name] = (p["p50"], p["p99"], cpu_us / len(lat))
        print(f"{name:<12} p50 {p['p50']:7.1f} us  p99 {p['p99']:8.1f} us  "
              f"node CPU {summary[name][2]:6.1f} us/get")  # fmt: skip
    for what in ("node", "sdk", "bare-sync", "sync"):
        b, a = summary[f"{what} before"], summary[f"{what} after"]
        print(f"{what}: after / before p50 x{a[0] / b[0]:.3f}, p99 x{a[1] / b[1]:.3f}, "
              f"node CPU x{a[2] / b[2]:.3f}")  # fmt: skip
    for side in ("before", "after"):
        sdk, bare = summary[f"sdk {side}"], summary[f"node {side}"]
        print(f"{side}: the SDK's multiplexer adds x{sdk[0] / bare[0]:.3f} to the node's p50")
        sync, bare = summary[f"sync {side}"], summary[f"bare-sync {side}"]
        print(f"{side}: the blocking SDK's multiplexer adds x{sync[0] / bare[0]:.3f} to its p50")


if __name__ == "__main__":
    main()
