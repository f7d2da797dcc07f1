"""Server CPU per unary get of two commits, in one run: the node of --before next to this tree's.

Run: .venv/bin/python -m bench.e2e.unary_ab --before REV [--samples 3000] [--rounds 5] [--http]

Exports commit REV (`git archive`) into a temporary directory, gives it this
tree's compiled extension and generated protobuf modules (built from a superset
of its protos), and starts one `edgekv serve` from each tree, both pinned to
CPU 1 (the client on CPU 0). Then one sequential unary Client get caller
alternates between the two nodes, --rounds times --samples gets each, so load
on the machine hits both alike; for each node: p50/p99 latency and the node's
CPU per get (user + system time from /proc over its own calls) and the
client's (this process's CPU time over the same calls). ``--http``: the gets
go to each node's HTTP door through ``Client("http://...")`` (Connect unary
over the blocking HTTP/1.1 pool) instead of the gRPC port.

Used for issue 14's "cut the server's own cost" (README, "Where a get's server
CPU goes"): run with --before set to the commit before the change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.e2e.http_door import cpu_s
from bench.e2e.load import percentiles, pin
from edgekv import Client, Put
from edgekv.local.launcher import NodeProcess, start_node, write_cluster_file

ROOT = Path(__file__).resolve().parents[2]
KEYS = [b"ab%06d" % i for i in range(2000)]


def export(rev: str, into: Path) -> None:
    """Commit ``rev``'s tree in ``into``, with this tree's built artefacts."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    for built in (*ROOT.glob("edgekv/_speedups*.so"), *ROOT.glob("edgekv/v1/*_pb2*.py"),
                  *ROOT.glob("edgekv/v1/*_connect.py")):  # fmt: skip
        shutil.copy2(built, into / built.relative_to(ROOT))


def start_from(tree: Path, config: Path) -> NodeProcess:
    """A node running the code in ``tree`` (``python -m`` puts the working directory first)."""
    here = os.getcwd()
    os.chdir(tree)
    try:
        return start_node(config, "node-1", log_level="warning")
    finally:
        os.chdir(here)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--http", action="store_true", help="through the HTTP door")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-ab-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "before").mkdir()
        export(args.before, tmp / "before")
        nodes = {
            "before": start_from(tmp / "before", write_cluster_file(tmp / "a", http=args.http)),
            "after": start_from(ROOT, write_cluster_file(tmp / "b", http=args.http)),
        }
        clients: dict[str, Client] = {}
        try:
            for node in nodes.values():
                pin(node.pid, 1)
            pin(0, 0)
            lat: dict[str, list[float]] = {name: [] for name in nodes}
            cpu = dict.fromkeys(nodes, 0.0)
            client_cpu = dict.fromkeys(nodes, 0.0)
            for name, node in nodes.items():
                if args.http:
                    clients[name] = Client(f"http://{node.http_endpoint}", discover=False)
                else:
                    clients[name] = Client(node.endpoint, discover=False, transport="unary")
                for i in range(0, len(KEYS), 1000):
                    clients[name].write([Put(k, b"v" * 100) for k in KEYS[i : i + 1000]])
                for k in KEYS[:500]:
                    clients[name].get(k)
            for r in range(args.rounds):
                for name in sorted(nodes, reverse=bool(r % 2)):
                    started = time.process_time()
                    samples, used = timed_gets(clients[name], args.samples, nodes[name].pid)
                    client_cpu[name] += (time.process_time() - started) * 1e6
                    lat[name] += samples
                    cpu[name] += used
        finally:
            for c in clients.values():
                c.close()
            for node in nodes.values():
                node.stop()
    door = "HTTP door (Connect unary)" if args.http else "gRPC port"
    print(f"unary get, sync Client, {door}, {args.rounds} x {args.samples} per node, nodes on "
          "CPU 1")  # fmt: skip
    figures = {}
    for name in nodes:
        p = percentiles(lat[name])
        n = len(lat[name])
        figures[name] = (p["p50"], p["p99"], cpu[name] / n, client_cpu[name] / n)
        print(f"{name:<7} ({args.before if name == 'before' else 'this tree'}): p50 "
              f"{p['p50']:7.1f} us  p99 {p['p99']:8.1f} us  server CPU {figures[name][2]:6.1f} "
              f"us/get  client CPU {figures[name][3]:6.1f} us/get")  # fmt: skip
    b, a = figures["before"], figures["after"]
    print(f"after / before: p50 x{a[0] / b[0]:.3f}, p99 x{a[1] / b[1]:.3f}, server CPU per get "
          f"x{a[2] / b[2]:.3f}, client CPU per get x{a[3] / b[3]:.3f}")  # fmt: skip


def timed_gets(client: Client, n: int, pid: int) -> tuple[list[float], float]:
    out = []
    before = cpu_s(pid)
    for i in range(n):
        t0 = time.perf_counter_ns()
        client.get(KEYS[i % len(KEYS)])
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out, (cpu_s(pid) - before) * 1e6


if __name__ == "__main__":
    main()
