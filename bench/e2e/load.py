"""End-to-end load: SDK get/put/get_many against one node, next to a bare gRPC echo.

Run: .venv/bin/python -m bench.e2e.load [--keys 100000] [--samples 5000] [--seconds 5]

Starts one `edgekv serve` and one echo server (bench/e2e/echo_server.py: the
same grpc.aio + uvloop stack, a handler that returns its request), preloads
--keys keys of 100 bytes, then measures with the SDK:

* single client (sync ``Client``): get, put, get_many of 100 keys — and the echo
  floor (unary and bidi-stream ping-pong) with the same client stack;
* 8 concurrent callers (``AsyncClient``, 8 coroutines) for --seconds: get and echo.

Servers are pinned to CPU 1 and the client to CPU 0 when the machine has two
CPUs, so client and server never steal each other's core. Figures that matter
are the ratios to the echo floor measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from edgekv import AsyncClient, Client, Put
from edgekv.local.launcher import start_node, write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.v1 import kv_pb2

ECHO = "/edgekv.bench.Echo/Echo"
ECHO_STREAM = "/edgekv.bench.Echo/EchoStream"


def percentiles(samples_us: list[float]) -> dict[str, float]:
    s = sorted(samples_us)
    n = len(s)
    return {
        "p50": s[n // 2],
        "p99": s[min(n - 1, int(n * 0.99))],
        "p999": s[min(n - 1, int(n * 0.999))],
    }


def row(name: str, samples_us: list[float], seconds: float | None = None) -> dict[str, float]:
    p = percentiles(samples_us)
    ops = len(samples_us) / seconds if seconds else 1e6 / (sum(samples_us) / len(samples_us))
    print(f"{name:<38} p50 {p['p50']:8.1f} us  p99 {p['p99']:8.1f} us  "
          f"p999 {p['p999']:8.1f} us  {ops:9.0f} ops/s")  # fmt: skip
    return {**p, "ops": ops}


def timed_calls(fn: object, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)  # type: ignore[operator]
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` (one thread: a process's main thread) and the threads it starts later."""
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def pin_all(pid: int, cpu: int) -> None:
    """Pin every thread of process ``pid`` (RocksDB's, gRPC's), and those started later."""
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                os.sched_setaffinity(int(tid), {cpu})


def start_echo(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp / "echo.ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e.echo_server", "--ready-file", str(ready)],
        cwd=Path(__file__).resolve().parents[2],
    )
    wait_until(ready.exists, timeout_s=20, what="the echo server")
    return proc, json.loads(ready.read_text())["endpoint"]


async def concurrent(callers: int, seconds: float, call: object) -> tuple[list[float], float]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            await call(i)  # type: ignore[operator]
            samples.append((time.perf_counter_ns() - t0) / 1000.0)
            i += callers

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(callers)))
    return samples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgekv-load-") as tmp_name:
        tmp = Path(tmp_name)
        node = start_node(write_cluster_file(tmp), "node-1", log_level="warning")
        echo, echo_ep = start_echo(tmp)
        try:
            pin(node.pid, 1)
            pin(echo.pid, 1)
            pin(0, 0)
            print(f"machine: {os.cpu_count()} CPUs; servers on CPU 1, client on CPU 0; "
                  f"{args.keys} keys of 100 bytes")  # fmt: skip
            value = os.urandom(100)
            keys = [b"k%08d" % i for i in range(args.keys)]
            with Client(node.endpoint, discover=False) as client:
                for i in range(0, len(keys), 1000):
                    client.write([Put(k, value) for k in keys[i : i + 1000]])
                rnd = random.Random(7)
                picks = [rnd.choice(keys) for _ in range(args.samples)]
                channel = grpc.insecure_channel(echo_ep)
                echo_call = channel.unary_unary(
                    ECHO,
                    request_serializer=kv_pb2.GetRequest.SerializeToString,
                    response_deserializer=kv_pb2.GetRequest.FromString,
                )
                for i in range(500):  # warm both paths
                    client.get(picks[i])
                    echo_call(kv_pb2.GetRequest(key=picks[i]))
                results["echo unary"] = row(
                    "echo unary (floor)",
                    timed_calls(lambda i: echo_call(kv_pb2.GetRequest(key=picks[i])), args.samples),
                )
                results["get"] = row(
                    "SDK get", timed_calls(lambda i: client.get(picks[i]), args.samples)
                )
                results["put"] = row(
                    "SDK put",
                    timed_calls(lambda i: client.put(b"w%08d" % i, value), args.samples),
                )
                batches = [rnd.sample(keys, 100) for _ in range(args.samples // 10)]
                results["get_many"] = row(
                    "SDK get_many (100 keys)",
                    timed_calls(lambda i: client.get_many(batches[i]), len(batches)),
                )
                stream = channel.stream_stream(ECHO_STREAM)
                results["echo stream"] = row(
                    "echo bidi ping-pong (floor)", stream_pingpong(stream, args.samples)
                )
                channel.close()

            async def run_concurrent() -> None:
                async with AsyncClient(node.endpoint, discover=False) as aclient:
                    samples, took = await concurrent(
                        8, args.seconds, lambda i: aclient.get(picks[i % len(picks)])
                    )
                    results["get x8"] = row("SDK get, 8 concurrent", samples, took)
                async with grpc.aio.insecure_channel(echo_ep) as ch:
                    call = ch.unary_unary(
                        ECHO,
                        request_serializer=kv_pb2.GetRequest.SerializeToString,
                        response_deserializer=kv_pb2.GetRequest.FromString,
                    )
                    samples, took = await concurrent(
                        8,
                        args.seconds,
                        lambda i: call(kv_pb2.GetRequest(key=picks[i % len(picks)])),
                    )
                    results["echo x8"] = row("echo unary, 8 concurrent (floor)", samples, took)

            asyncio.run(run_concurrent())
        finally:
            echo.terminate()
            echo.wait(10)
            node.stop()
    floor, get = results["echo unary"], results["get"]
    print()
    print(f"get p50 / echo p50        {get['p50'] / floor['p50']:.2f}x   (goal <= 1.25x)")
    print(f"get p99 / echo p99        {get['p99'] / floor['p99']:.2f}x   (goal <= 1.5x)")
    print(f"put p50 / echo p50        {results['put']['p50'] / floor['p50']:.2f}x   (goal <= 1.4x)")
    print(
        f"get_many(100) / get p50   {results['get_many']['p50'] / get['p50']:.2f}x   (goal <= 3x)"
    )
    print(f"get x8 ops / echo x8 ops  {results['get x8']['ops'] / results['echo x8']['ops']:.2f}")


def stream_pingpong(stream: object, n: int) -> list[float]:
    """Round trips on one bidi stream: send one message, wait for its echo."""
    import queue
    import threading

    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> object:
        while (msg := outbox.get()) is not None:
            yield msg

    responses = stream(requests())  # type: ignore[operator]
    samples = []
    payload = kv_pb2.GetRequest(key=b"k00000001").SerializeToString()
    lock = threading.Lock()
    with lock:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            outbox.put(payload)
            next(responses)
            samples.append((time.perf_counter_ns() - t0) / 1000.0)
    outbox.put(None)
    return samples


if __name__ == "__main__":
    main()
