"""Where a node's CPU goes on the get path: a py-spy profile of `edgekv serve` under SDK gets.

Run: .venv/bin/python -m bench.e2e.profile_get [--seconds 10] [--transport unary]
     [--svg bench/results/unary-get-flame.svg] [--callers 4]

Starts one node, preloads 1000 keys of 100 bytes, and keeps --callers
coroutines of one AsyncClient (--transport unary or stream) reading them while
py-spy (a test dependency) samples the node twice: once for the flame graph
(--svg) and once in raw form, summarised here as the share of samples whose
stack runs through each edgekv function (inclusive) and, for the rest, the
leaf frames of grpc, asyncio and protobuf. py-spy sees Python frames only:
grpc's C core (its I/O threads, Cython) shows as the Python frame that called
it, so the table is a share of GIL-holding time, not of the process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvloop

from edgekv import AsyncClient, Put
from edgekv.local.launcher import start_node, write_cluster_file

# Frames of the process's own start-up that every stack runs through.
_ENTRY = ("(edgekv/cli/", "(edgekv/server/process.py")


def py_spy() -> str:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("py-spy not found: `make build` installs it (test extra)")
    return exe


def load(endpoint: str, transport: str, callers: int, stop: threading.Event) -> None:
    async def run() -> None:
        async with AsyncClient(endpoint, discover=False, transport=transport) as client:
            await client.write([Put(b"p%04d" % i, b"v" * 100) for i in range(1000)])

            async def caller(w: int) -> None:
                i = w
                while not stop.is_set():
                    await client.get(b"p%04d" % (i % 1000))
                    i += callers

            await asyncio.gather(*(caller(w) for w in range(callers)))

    uvloop.run(run())


def summarise(raw: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = edgekv = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own = [f for f in frames if "(edgekv/" in f and not any(e in f for e in _ENTRY)]
        for name in {f.split(":")[0] + ")" for f in own}:
            inclusive[name] += count
        if own:
            edgekv += count
        else:
            leaf = frames[-1]
            where = leaf.split("site-packages/")[-1] if "site-packages/" in leaf else leaf
            leaves[where.split(":")[0]] += count
    print(f"{total} samples; {100 * edgekv / max(1, total):.1f}% run through edgekv code")
    print("\nedgekv functions, inclusive share of samples:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\nthe rest (no edgekv frame), by leaf:")
    for name, count in leaves.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--transport", choices=("unary", "stream"), default="unary")
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--svg", type=Path, help="write the flame graph here")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--native", action="store_true", help="py-spy --native: C and Cython frames too"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekv-profile-") as tmp_name:
        tmp = Path(tmp_name)
        node = start_node(write_cluster_file(tmp), "node-1", log_level="warning")
        stop = threading.Event()
        loader = threading.Thread(
            target=load, args=(node.endpoint, args.transport, args.callers, stop)
        )
        loader.start()
        try:
            time.sleep(2)  # preload and warm up
            spy = [py_spy(), "record", "--pid", str(node.pid), "--rate", str(args.rate)]
            # --gil: only samples that hold the GIL, i.e. Python running, not
            # the loop waiting in epoll (uvloop's wait is native code).
            duration = ["--duration", str(args.seconds), "--gil"]
            if args.native:
                duration.append("--native")
            if args.svg:
                args.svg.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([*spy, *duration, "-o", str(args.svg)], check=True)
            raw = tmp / "profile.txt"
            subprocess.run([*spy, *duration, "--format", "raw", "-o", str(raw)], check=True)
        finally:
            stop.set()
            loader.join(30)
            node.stop()
        summarise(raw, args.top)


if __name__ == "__main__":
    main()
