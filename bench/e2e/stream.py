"""The streamed SDK against the unary SDK and the bare bidi ping-pong floor, in one run.

Run: .venv/bin/python -m bench.e2e.stream [--samples 3000] [--rounds 2] [--restarts 3]
     [--seconds 3] [--keys 10000] [--json out.json] [--markdown bench/results/stream.md]

Starts one `edgekv serve` and one echo server (bench/e2e/echo_server.py: grpc.aio
on uvloop, handlers that return their request bytes), preloads --keys keys of
100 bytes, then measures one sequential caller per path, the paths shuffled
and interleaved over --rounds rounds so machine noise hits them alike. All of
that --restarts times, with fresh processes: a process's speed differs from
one start to the next (the echo floor's p50 by 5-8% here), which interleaving
within one run cannot even out. Each figure is the mean of the restarts' own
figures, and the goal ratio of each restart is printed too. The paths:

* floors: a bidi ping-pong on the echo server's EchoStream (write one message,
  read its echo) and a unary echo call, each with the same client stack as the
  SDK path it is the floor of: grpc.aio for AsyncClient, grpc for Client; and
  a ping-pong of serialized gets on the node's KV.Stream (no SDK) on each stack;
* SDK get and put with ``transport="unary"`` and ``transport="stream"``, for
  AsyncClient (on uvloop) and Client;
* 8 coroutines sharing one AsyncClient, and 8 threads sharing one Client, for
  --seconds: get, unary and streamed.

For each path: p50/p99 latency, throughput, and the server's CPU per call
(user + system time of the node or echo process from /proc, over that path's
calls only) and the client's own CPU per call (this process, grpc's threads
included). Servers are pinned to CPU 1 and the client to CPU 0 on a
2-CPU machine, as bench/e2e/load.py does. The goal (issue 14): streamed SDK get
p50 <= 1.3x the bidi floor of the same client stack.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench.e2e.http_door import cpu_s
from bench.e2e.load import percentiles, pin, start_echo
from edgekv import AsyncClient, Client, Put
from edgekv.local.launcher import start_node, write_cluster_file
from edgekv.v1 import common_pb2, kv_pb2

ECHO = "/edgekv.bench.Echo/Echo"
ECHO_STREAM = "/edgekv.bench.Echo/EchoStream"
VALUE = b"v" * 100
# What a streamed get carries each way, so the floor moves as many bytes.
PAYLOAD = kv_pb2.StreamResponse(
    id=1234,
    get=kv_pb2.GetResponse(
        found=True,
        value=VALUE,
        version=common_pb2.Version(timestamp=1 << 56, origin="node-1"),
        served_by="node-1",
    ),
).SerializeToString()

Sync = Callable[[int], Any]
Async = Callable[[int], Awaitable[Any]]


def timed(call: Sync, n: int, pid: int) -> tuple[list[float], float, float]:
    """Latencies (us) of ``n`` calls, the CPU (us) process ``pid`` spent meanwhile and
    this process's CPU (us, every thread: grpc's included)."""
    lat = []
    before, mine = cpu_s(pid), time.process_time()
    for i in range(n):
        t0 = time.perf_counter_ns()
        call(i)
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, (cpu_s(pid) - before) * 1e6, (time.process_time() - mine) * 1e6


async def timed_async(call: Async, n: int, pid: int) -> tuple[list[float], float, float]:
    lat = []
    before, mine = cpu_s(pid), time.process_time()
    for i in range(n):
        t0 = time.perf_counter_ns()
        await call(i)
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, (cpu_s(pid) - before) * 1e6, (time.process_time() - mine) * 1e6


async def concurrent(
    call: Async, callers: int, seconds: float, pid: int
) -> tuple[int, float, float]:
    """(calls, wall seconds, server CPU us) of ``callers`` coroutines calling for ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < deadline:
            await call(i)
            done += 1
            i += callers

    before, start = cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(callers)))
    return done, time.perf_counter() - start, (cpu_s(pid) - before) * 1e6


def threaded(
    call: Sync, callers: int, seconds: float, pid: int
) -> tuple[list[float], float, float]:
    """Latencies (us) of ``callers`` threads calling for ``seconds``, the wall seconds and
    the CPU (us) process ``pid`` spent meanwhile."""
    lat: list[list[float]] = [[] for _ in range(callers)]
    deadline = time.perf_counter() + seconds

    def worker(w: int) -> None:
        mine, i = lat[w], w
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            call(i)
            mine.append((time.perf_counter_ns() - t0) / 1000.0)
            i += callers

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(callers)]
    before, start = cpu_s(pid), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for w in lat for x in w], time.perf_counter() - start, (cpu_s(pid) - before) * 1e6


class SyncPingPong:
    """A bidi ping-pong on grpc's blocking stack (a queue feeds the request iterator)."""

    def __init__(
        self, channel: grpc.Channel, method: str = ECHO_STREAM, payload: bytes = PAYLOAD
    ) -> None:
        import queue

        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._payload = payload
        outbox = self._outbox

        def requests() -> Any:
            while (msg := outbox.get()) is not None:
                yield msg

        self._responses = channel.stream_stream(method)(requests())

    def __call__(self, i: int) -> None:
        self._outbox.put(self._payload)
        next(self._responses)

    def close(self) -> None:
        self._outbox.put(None)


class AsyncPingPong:
    """A bidi ping-pong on grpc.aio: write one message, read its echo, same coroutine."""

    def __init__(
        self, channel: grpc.aio.Channel, method: str = ECHO_STREAM, payload: bytes = PAYLOAD
    ) -> None:
        self._call = channel.stream_stream(method)()
        self._payload = payload

    async def __call__(self, i: int) -> None:
        await self._call.write(self._payload)
        await self._call.read()

    def close(self) -> None:
        self._call.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=3000, help="calls per path per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per restart")
    parser.add_argument(
        "--restarts", type=int, default=3, help="fresh node and echo server processes"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrent path/round")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--only", help="run only the paths whose name contains one of these ('unary|floor')"
    )
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    runs: list[dict[str, dict[str, float]]] = []  # each restart's figures
    with tempfile.TemporaryDirectory(prefix="edgekv-stream-bench-") as tmp_name:
        for restart in range(args.restarts):
            tmp = Path(tmp_name) / f"restart-{restart}"
            tmp.mkdir()
            node = start_node(write_cluster_file(tmp), "node-1", log_level="warning")
            echo, echo_ep = start_echo(tmp)
            closers: list[Callable[[], Any]] = []
            try:
                pin(node.pid, 1)
                pin(echo.pid, 1)
                pin(0, 0)
                samples = run(args, loop, node.endpoint, node.pid, echo_ep, echo.pid, closers)
            finally:
                for close in reversed(closers):
                    result = close()
                    if asyncio.iscoroutine(result):
                        loop.run_until_complete(result)
                echo.terminate()
                echo.wait(10)
                node.stop()
            runs.append(figures_of(samples))
    loop.close()
    report(mean_of(runs), [goal_ratios(figures) for figures in runs], args)


def run(
    args: argparse.Namespace,
    loop: asyncio.AbstractEventLoop,
    endpoint: str,
    node_pid: int,
    echo_ep: str,
    echo_pid: int,
    closers: list[Callable[[], Any]],
) -> Samples:
    keys = [b"k%08d" % i for i in range(args.keys)]
    rnd = random.Random(7)
    picks = [rnd.choice(keys) for _ in range(max(args.samples, 10_000))]
    n_picks = len(picks)
    clients = {t: Client(endpoint, discover=False, transport=t) for t in ("unary", "stream")}
    aclients = {t: AsyncClient(endpoint, discover=False, transport=t) for t in ("unary", "stream")}
    closers += [c.close for c in clients.values()] + [c.close for c in aclients.values()]
    for i in range(0, len(keys), 1000):
        clients["unary"].write([Put(k, VALUE) for k in keys[i : i + 1000]])
    channel = grpc.insecure_channel(echo_ep)
    achannel = loop.run_until_complete(_aio_channel(echo_ep))
    closers += [channel.close, achannel.close]
    sync_pingpong, async_pingpong = SyncPingPong(channel), AsyncPingPong(achannel)
    node_channel = loop.run_until_complete(_aio_channel(endpoint))
    get_op = kv_pb2.StreamRequest(id=1, timeout_ms=5000, get=kv_pb2.GetRequest(key=keys[0]))
    # KV.Stream itself, without the SDK: one coroutine writes a get and reads its answer.
    raw_stream = AsyncPingPong(node_channel, "/edgekv.v1.KV/Stream", get_op.SerializeToString())
    sync_node_channel = grpc.insecure_channel(endpoint)
    raw_sync = SyncPingPong(sync_node_channel, "/edgekv.v1.KV/Stream", get_op.SerializeToString())
    closers += [sync_pingpong.close, async_pingpong.close, raw_stream.close, node_channel.close]
    closers += [raw_sync.close, sync_node_channel.close]
    unary_echo = channel.unary_unary(ECHO)
    aunary_echo = achannel.unary_unary(ECHO)

    sync_paths: dict[str, tuple[Sync, int]] = {
        "floor bidi (grpc)": (sync_pingpong, echo_pid),
        "KV.Stream get ping-pong, no SDK (grpc)": (raw_sync, node_pid),
        "floor unary (grpc)": (lambda i: unary_echo(PAYLOAD), echo_pid),
        "Client get unary": (lambda i: clients["unary"].get(picks[i % n_picks]), node_pid),
        "Client get stream": (lambda i: clients["stream"].get(picks[i % n_picks]), node_pid),
    }
    async_paths: dict[str, tuple[Async, int]] = {
        "floor bidi (grpc.aio)": (async_pingpong, echo_pid),
        "KV.Stream get ping-pong, no SDK (grpc.aio)": (raw_stream, node_pid),
        "floor unary (grpc.aio)": (lambda i: aunary_echo(PAYLOAD), echo_pid),
        "AsyncClient get unary": (lambda i: aclients["unary"].get(picks[i % n_picks]), node_pid),
        "AsyncClient get stream": (lambda i: aclients["stream"].get(picks[i % n_picks]), node_pid),
        "AsyncClient put unary": (lambda i: aclients["unary"].put(b"w%d" % i, VALUE), node_pid),
        "AsyncClient put stream": (lambda i: aclients["stream"].put(b"w%d" % i, VALUE), node_pid),
    }
    many: dict[str, Async] = {
        "AsyncClient get unary, 8 coroutines": lambda i: aclients["unary"].get(picks[i % n_picks]),
        "AsyncClient get stream, 8 coroutines": lambda i: aclients["stream"].get(
            picks[i % n_picks]
        ),
    }
    many_threads: dict[str, Sync] = {
        f"Client get {t}, 8 threads": functools.partial(_get, clients[t], picks)
        for t in ("unary", "stream")
    }
    if args.only:
        for paths in (sync_paths, async_paths, many, many_threads):
            for name in [n for n in paths if not any(o in n for o in args.only.split("|"))]:
                del paths[name]
    for call, _ in sync_paths.values():  # warm every path
        for i in range(300):
            call(i)
    for acall, _ in async_paths.values():
        loop.run_until_complete(timed_async(acall, 300, node_pid))
    lat: dict[str, list[float]] = {name: [] for name in [*sync_paths, *async_paths]}
    cpu: dict[str, float] = dict.fromkeys(lat, 0.0)
    client_cpu: dict[str, float] = dict.fromkeys(lat, 0.0)
    conc: dict[str, list[float]] = {name: [0, 0.0, 0.0] for name in [*many, *many_threads]}
    for name in many_threads:
        lat[name] = []
    order = [*sync_paths, *async_paths, *many, *many_threads]
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            if name in sync_paths:
                call, pid = sync_paths[name]
                samples, used, mine = timed(call, args.samples, pid)
            elif name in many_threads:
                samples, took, used = threaded(many_threads[name], 8, args.seconds, node_pid)
                lat[name] += samples
                conc[name][1] += took
                conc[name][2] += used
                continue
            elif name in async_paths:
                acall, pid = async_paths[name]
                samples, used, mine = loop.run_until_complete(timed_async(acall, args.samples, pid))
            else:
                done, took, used = loop.run_until_complete(
                    concurrent(many[name], 8, args.seconds, node_pid)
                )
                total = conc[name]
                total[0] += done
                total[1] += took
                total[2] += used
                continue
            lat[name] += samples
            cpu[name] += used
            client_cpu[name] += mine
    return Samples(lat, cpu, client_cpu, conc, set(many_threads))


@dataclasses.dataclass
class Samples:
    """What the paths of one run measured."""

    lat: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    client_cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    conc: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    threaded: set[str] = dataclasses.field(default_factory=set)


def figures_of(samples: Samples) -> dict[str, dict[str, float]]:
    lat, conc = dict(samples.lat), samples.conc
    figures: dict[str, dict[str, float]] = {}
    for name in samples.threaded:
        measured = lat.pop(name)
        p = percentiles(measured)
        took, used = conc[name][1:]
        figures[name] = {
            "p50_us": p["p50"],
            "p99_us": p["p99"],
            "ops_per_s": len(measured) / took,
            "server_cpu_us": used / max(1, len(measured)),
        }
    for name, measured in lat.items():
        p = percentiles(measured)
        figures[name] = {
            "p50_us": p["p50"],
            "p99_us": p["p99"],
            "ops_per_s": 1e6 * len(measured) / sum(measured),
            "server_cpu_us": samples.cpu[name] / len(measured),
            "client_cpu_us": samples.client_cpu[name] / len(measured),
        }
    for name, (calls, seconds, used_us) in conc.items():
        if name not in samples.threaded:
            figures[name] = {"ops_per_s": calls / seconds, "server_cpu_us": used_us / max(1, calls)}
    return figures


def mean_of(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each figure's mean over the restarts (a p50 is each run's own p50, averaged: the
    median of pooled samples lands anywhere between two runs' modes)."""
    return {
        name: {key: sum(run[name][key] for run in runs) / len(runs) for key in figures}
        for name, figures in runs[0].items()
    }


GOALS = {"AsyncClient": "grpc.aio", "Client": "grpc"}  # SDK -> its floor's client stack


def goal_ratios(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """Streamed get p50 over the bidi floor's, per SDK (issue 14: <= 1.3)."""
    return {
        kind: figures[f"{kind} get stream"]["p50_us"] / figures[f"floor bidi ({stack})"]["p50_us"]
        for kind, stack in GOALS.items()
        if f"{kind} get stream" in figures and f"floor bidi ({stack})" in figures
    }


def _get(client: Client, picks: list[bytes], i: int) -> Any:
    return client.get(picks[i % len(picks)])


async def _aio_channel(endpoint: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(endpoint)


def report(
    figures: dict[str, dict[str, float]],
    goals: list[dict[str, float]],
    args: argparse.Namespace,
) -> None:
    lines = [
        f"machine: {os.cpu_count()} CPUs (servers on CPU 1, client on CPU 0), "
        f"{args.keys} keys of 100 bytes, {args.restarts} restarts x {args.rounds} rounds x "
        f"{args.samples} calls per path; each figure is the mean of the restarts' figures",
        "",
        "| path | p50 µs | p99 µs | ops/s | server CPU µs/op | client CPU µs/op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, f in figures.items():
        p50 = f"{f['p50_us']:.0f}" if "p50_us" in f else "—"
        p99 = f"{f['p99_us']:.0f}" if "p99_us" in f else "—"
        client = f"{f['client_cpu_us']:.0f}" if "client_cpu_us" in f else "—"
        lines.append(
            f"| {name} | {p50} | {p99} | {f['ops_per_s']:,.0f} | {f['server_cpu_us']:.0f} "
            f"| {client} |"
        )
    lines.append("")

    def ratio(a: str, b: str, key: str) -> str:
        if a not in figures or b not in figures:
            return "(not run)"
        return f"x{figures[a][key] / figures[b][key]:.2f}"

    if "Client get unary" in figures and "floor unary (grpc)" in figures:
        lines.append(
            "- unary get: server CPU "
            f"{ratio('Client get unary', 'floor unary (grpc)', 'server_cpu_us')} (Client) and "
            f"{ratio('AsyncClient get unary', 'floor unary (grpc.aio)', 'server_cpu_us')} "
            "(AsyncClient) of the unary echo floor's"
        )

    for stack in ("grpc.aio", "grpc"):
        raw, floor = f"KV.Stream get ping-pong, no SDK ({stack})", f"floor bidi ({stack})"
        lines.append(
            f"- KV.Stream without the SDK ({stack}): p50 {ratio(raw, floor, 'p50_us')} and "
            f"server CPU {ratio(raw, floor, 'server_cpu_us')} of the bidi floor"
        )
    for kind, stack in (("AsyncClient", "grpc.aio"), ("Client", "grpc")):
        stream, unary = f"{kind} get stream", f"{kind} get unary"
        floor, raw = f"floor bidi ({stack})", f"KV.Stream get ping-pong, no SDK ({stack})"
        lines.append(
            f"- {kind}: streamed get p50 {ratio(stream, floor, 'p50_us')} of the bidi floor "
            f"(goal <= x1.3), {ratio(stream, raw, 'p50_us')} of KV.Stream without the SDK; "
            f"p50 {ratio(stream, unary, 'p50_us')} and server CPU "
            f"{ratio(stream, unary, 'server_cpu_us')} of unary get"
        )
    for kind in GOALS:
        each = ", ".join(f"x{goal[kind]:.2f}" for goal in goals if kind in goal)
        lines.append(f"- {kind}: streamed get p50 over the bidi floor, restart by restart: {each}")
    lines.append(
        "- AsyncClient put: streamed p50 "
        f"{ratio('AsyncClient put stream', 'AsyncClient put unary', 'p50_us')}, server CPU "
        f"{ratio('AsyncClient put stream', 'AsyncClient put unary', 'server_cpu_us')} of unary"
    )
    s8, u8 = "AsyncClient get stream, 8 coroutines", "AsyncClient get unary, 8 coroutines"
    lines.append(
        f"- 8 coroutines: streamed get {ratio(s8, u8, 'ops_per_s')} the throughput of unary, "
        f"server CPU per get {ratio(s8, u8, 'server_cpu_us')}"
    )
    s8, u8 = "Client get stream, 8 threads", "Client get unary, 8 threads"
    lines.append(
        f"- 8 threads: streamed get {ratio(s8, u8, 'ops_per_s')} the throughput of unary, "
        f"p50 {ratio(s8, u8, 'p50_us')}, p99 {ratio(s8, u8, 'p99_us')}, "
        f"server CPU per get {ratio(s8, u8, 'server_cpu_us')}"
    )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            "# Streamed SDK vs unary vs the bidi floor (bench/e2e/stream.py)\n\n"
            f"`.venv/bin/python -m bench.e2e.stream --samples {args.samples} --rounds "
            f"{args.rounds} --restarts {args.restarts} --seconds {args.seconds} "
            f"--keys {args.keys}`\n\n" + text + "\n"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
