"""Run the comparison: start every system, load one dataset, run the workloads, report.

Run: .venv/bin/python -m bench.compare [--keys 100000] [--samples 10000]
     [--seconds 10] [--rounds 5] [--out bench/results] [--only NAME ...] [--smoke]

``make bench`` installs the peers first (scripts/bench_peers.sh, and the
``bench`` extra), then runs this with the defaults. ``--smoke`` (tests/integration/
test_bench_compare.py) runs tiny counts into a temporary directory so the whole
pipeline is exercised in seconds; it never installs anything and skips the
systems that are not there, saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.compare import edgekv_paths, measure, peers, report
from bench.compare.adapter import Adapter
from edgekv.local import launcher

RESULTS = Path(__file__).resolve().parents[1] / "results"
SMOKE = {"keys": 200, "samples": 40, "seconds": 0.15, "rounds": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--keys", type=int, default=100_000, help="dataset size (100-byte values)")
    parser.add_argument(
        "--samples", type=int, default=10_000, help="single-client gets (puts: half)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="per concurrent workload and system"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved blocks per workload")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where compare.md/.json/.png go")
    parser.add_argument(
        "--only", nargs="*", default=None, help="systems whose name contains one of these"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def adapters(node: edgekv_paths.SharedNode, only: list[str] | None) -> list[Adapter]:
    every: list[Adapter] = [path(node) for path in edgekv_paths.PATHS]
    every += [peer() for peer in peers.PEERS]
    if only:
        every = [
            a
            for a in every
            if a.name == edgekv_paths.BASELINE or any(o.lower() in a.name.lower() for o in only)
        ]
    return every


# The signal that stopped the run: raised again at the next block, because uvloop
# swallows a KeyboardInterrupt raised inside one of its callbacks (it logs "Fatal
# error on transport" and goes on), as a SIGINT that lands in a read can be.
_stopped_by: int | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stopped_by
    _stopped_by = signum
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: below


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # the smoke test, on an xdist worker:
    if worker:  # pick ports only from that worker's share, as its own clusters do
        launcher.share_ports(int(worker[2:]), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    plan = measure.Plan.make(args.keys, args.samples, args.rounds, args.seconds)
    started = time.time()
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, measure.Figures]] = {}
    versions: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="edgekv-compare-") as tmp_name:
        tmp = Path(tmp_name)
        node = edgekv_paths.SharedNode(tmp)
        live: list[Adapter] = []
        try:
            for adapter in adapters(node, args.only):
                adapter.value = plan.value
                why = adapter.unavailable()
                if why is None:
                    why = _start(adapter, tmp, plan)
                if why is not None:
                    skipped[adapter.name] = why
                    print(f"skipped: {adapter.name}: {why}", flush=True)
                    continue
                live.append(adapter)
                versions[adapter.name] = adapter.versions
                results[adapter.name] = {w.key: measure.Figures() for w in measure.WORKLOADS}
                if (why := adapter.async_unavailable()) is not None:
                    skipped[f"{adapter.name}, {measure.CLIENTS} concurrent clients"] = why
            _measure(live, plan, results, skipped)
            if _stopped_by is not None:  # swallowed in the last block
                raise KeyboardInterrupt(f"signal {_stopped_by}")
        finally:
            for adapter in live:
                with contextlib.suppress(Exception):
                    adapter.close()
            node.stop()
    took = time.time() - started
    out = report.write(args, results, skipped, versions, took, load_at_start)
    print(out.read_text())
    return 0 if edgekv_paths.BASELINE in results else 1


def _start(adapter: Adapter, tmp: Path, plan: measure.Plan) -> str | None:
    """Start, load and warm one adapter; why it failed (None when it is ready)."""
    t0 = time.perf_counter()
    try:
        adapter.start(tmp)
        adapter.load(plan.keys, plan.value)
        measure.warm_up(adapter, plan)
    except Exception as exc:  # one system failing must not stop the others
        with contextlib.suppress(Exception):
            adapter.close()
        return f"failed to start or load: {type(exc).__name__}: {exc}"
    print(
        f"ready: {adapter.name} ({len(plan.keys)} keys loaded in {time.perf_counter() - t0:.1f}s)",
        flush=True,
    )
    return None


def _measure(
    live: list[Adapter],
    plan: measure.Plan,
    results: dict[str, dict[str, measure.Figures]],
    skipped: dict[str, str],
) -> None:
    order = list(live)
    for round_no in range(plan.rounds):
        for workload in measure.WORKLOADS:
            random.shuffle(order)
            for adapter in order:
                if _stopped_by is not None:
                    raise KeyboardInterrupt(f"signal {_stopped_by}")
                if adapter.name in skipped:
                    continue
                if workload.concurrent and adapter.async_unavailable() is not None:
                    continue
                try:
                    measure.run_block(
                        adapter, workload, plan, round_no, results[adapter.name][workload.key]
                    )
                except Exception as exc:
                    skipped[adapter.name] = (
                        f"failed during {workload.title}: {type(exc).__name__}: {exc}"
                    )
                    print(f"failed: {adapter.name}: {skipped[adapter.name]}", flush=True)
                    results.pop(adapter.name, None)
        print(f"round {round_no + 1}/{plan.rounds} done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
