"""SDK get and put, this tree against an earlier revision, each as a ratio to the echo floor.

Run: .venv/bin/python -m bench.e2e.revisions --baseline e741bf7 [--samples 3000] [--rounds 5]

Exports ``--baseline`` (any git revision) with ``git archive`` into a temporary
directory, builds its Cython extension and gRPC modules there, and starts
three servers side by side: a node of the baseline, a node of this tree, and the
bare grpc.aio echo server (bench/e2e/echo_server.py), all pinned to CPU 1 with
the client on CPU 0. In each round the three are measured in a rotating order
with the same sync SDK client stack (the echo through a raw channel), so drift
of the machine hits all of them alike. Prints p50/p99/throughput and server CPU
per operation for each, then each node's ratio to the echo floor and the change
from baseline to this tree.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import grpc

from bench.e2e.load import percentiles, pin, start_echo, timed_calls
from edgekv import Client, Put
from edgekv.local.launcher import NodeProcess, start_node, write_cluster_file
from edgekv.v1 import kv_pb2

ROOT = Path(__file__).resolve().parents[2]
ECHO = "/edgekv.bench.Echo/Echo"
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def export_revision(rev: str, into: Path) -> Path:
    """``rev``'s tree in ``into``, with its own extension and gRPC modules built."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    print(f"building {rev} (Cython extension, gRPC modules) in {into} ...")
    subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=into, check=True, capture_output=True,
    )  # fmt: skip
    return into


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


class Target:
    """One server under test and the samples gathered from it."""

    def __init__(self, name: str, pid: int, get: object, put: object) -> None:
        self.name, self.pid, self.get, self.put = name, pid, get, put
        self.samples: dict[str, list[float]] = {"get": [], "put": []}
        self.cpu: dict[str, float] = {"get": 0.0, "put": 0.0}

    def measure(self, op: str, n: int, offset: int) -> None:
        fn = self.get if op == "get" else self.put
        before = cpu_s(self.pid)
        self.samples[op] += timed_calls(lambda i: fn(offset + i), n)  # type: ignore[operator]
        self.cpu[op] += cpu_s(self.pid) - before

    def report(self, op: str) -> dict[str, float]:
        samples = self.samples[op]
        p = percentiles(samples)
        ops = 1e6 / (sum(samples) / len(samples))
        cpu_us = self.cpu[op] / len(samples) * 1e6
        print(f"{self.name + ' ' + op:<26} p50 {p['p50']:7.1f} us  p99 {p['p99']:7.1f} us  "
              f"{ops:7.0f} ops/s  server CPU {cpu_us:6.1f} us/op")  # fmt: skip
        return {**p, "ops": ops, "cpu_us": cpu_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=3000, help="per round, op and server")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    nodes: list[NodeProcess] = []
    with tempfile.TemporaryDirectory(prefix="edgekv-revisions-") as tmp_name:
        tmp = Path(tmp_name)
        baseline_src = export_revision(args.baseline, tmp / "src")
        base = start_node(
            write_cluster_file(tmp / "baseline"), "node-1", log_level="warning",
            env={"PYTHONPATH": str(baseline_src)},
        )  # fmt: skip
        nodes.append(base)
        current = start_node(write_cluster_file(tmp / "current"), "node-1", log_level="warning")
        nodes.append(current)
        echo, echo_ep = start_echo(tmp)
        try:
            for pid in (base.pid, current.pid, echo.pid):
                pin(pid, 1)
            pin(0, 0)
            value = os.urandom(100)
            keys = [b"k%08d" % i for i in range(args.keys)]
            clients = [Client(n.endpoint, discover=False) for n in (base, current)]
            channel = grpc.insecure_channel(echo_ep)
            echo_get = channel.unary_unary(
                ECHO, request_serializer=kv_pb2.GetRequest.SerializeToString,
                response_deserializer=kv_pb2.GetRequest.FromString,
            )  # fmt: skip
            echo_put = channel.unary_unary(
                ECHO, request_serializer=kv_pb2.PutRequest.SerializeToString,
                response_deserializer=kv_pb2.PutRequest.FromString,
            )  # fmt: skip
            for client in clients:
                for i in range(0, len(keys), 1000):
                    client.write([Put(k, value) for k in keys[i : i + 1000]])
            pick = [keys[(i * 7919) % len(keys)] for i in range(args.samples * args.rounds)]
            targets = [
                Target("echo (floor)", echo.pid,
                       lambda i: echo_get(kv_pb2.GetRequest(key=pick[i])),
                       lambda i: echo_put(kv_pb2.PutRequest(key=b"w%08d" % i, value=value))),
                Target(f"baseline {args.baseline[:10]}", base.pid,
                       lambda i: clients[0].get(pick[i]),
                       lambda i: clients[0].put(b"w%08d" % i, value)),
                Target("this tree", current.pid,
                       lambda i: clients[1].get(pick[i]),
                       lambda i: clients[1].put(b"w%08d" % i, value)),
            ]  # fmt: skip
            for target in targets:  # warm every path
                target.get(0)  # type: ignore[operator]
                target.put(0)  # type: ignore[operator]
            print(f"{args.rounds} rounds x {args.samples} calls per op and server; servers on "
                  f"CPU 1, client on CPU 0; {args.keys} keys of 100 bytes")  # fmt: skip
            for r in range(args.rounds):
                order = targets[r % 3 :] + targets[: r % 3]
                for op in ("get", "put"):
                    for target in order:
                        target.measure(op, args.samples, r * args.samples)
            results = {(t.name, op): t.report(op) for op in ("get", "put") for t in targets}
            print()
            floor, old, new = (t.name for t in targets)
            for op in ("get", "put"):
                for q in ("p50", "p99"):
                    before = results[(old, op)][q] / results[(floor, op)][q]
                    after = results[(new, op)][q] / results[(floor, op)][q]
                    print(f"{op} {q} / echo {q}:  baseline {before:.3f}x   this tree {after:.3f}x"
                          f"   change {100 * (after / before - 1):+.1f}%")  # fmt: skip
            for client in clients:
                client.close()
            channel.close()
        finally:
            echo.terminate()
            echo.wait(10)
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
