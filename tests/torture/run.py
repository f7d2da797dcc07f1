"""``make torture``: several seeded torture runs, a report, a non-zero exit on any violation.

    PYTHONPATH=tests .venv/bin/python -m torture.run --seed 1 --duration 1800 --seeds 5

``--duration`` is the whole budget in seconds, shared by the seeds. Each run's
directory (cluster file, data, node logs) is kept under ``--dir`` when it fails.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from .nemesis import FAULT_KINDS, ROOT_FAULT_KINDS, quotas_available
from .netns import unavailable
from .report import failure, report
from .runner import OVERHEAD_S, Result, Settings, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torture", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (seed, seed+1, ...)")
    parser.add_argument("--duration", type=float, default=300.0, help="total seconds, all seeds")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--nemeses", type=int, default=2, help="faults in effect at once")
    parser.add_argument(
        "--disk", choices=("auto", "yes", "no"), default="auto",
        help="fill small per-node disk quotas too (needs root to mount tmpfs; auto: if it can)",
    )  # fmt: skip
    parser.add_argument(
        "--network", choices=("auto", "netns", "proxy"), default="auto",
        help="partitions by nftables between network namespaces (root, ip, nft) or by the "
        "fault proxies; auto: netns where it works",
    )  # fmt: skip
    parser.add_argument("--report", type=Path, default=None, help="also write the report here")
    parser.add_argument("--dir", type=Path, default=None, help="where runs keep their files")
    args = parser.parse_args(argv)
    disk = args.disk == "yes" or (args.disk == "auto" and quotas_available())
    faults = FAULT_KINDS + (ROOT_FAULT_KINDS if disk else ())
    print(f"torture: faults {', '.join(faults)}", flush=True)
    network = args.network
    why_not = unavailable() if network != "proxy" else ""
    if network == "netns" and why_not:
        parser.error(f"--network netns: {why_not}")
    if network == "auto":
        network = "proxy" if why_not else "netns"
        if why_not:
            print(f"torture: partitions through the fault proxies: {why_not}", flush=True)
    per_seed = max(10.0, args.duration / max(1, args.seeds) - OVERHEAD_S)
    base = Path(args.dir or tempfile.mkdtemp(prefix="edgekv-torture-"))
    results: list[Result] = []
    for seed in range(args.seed, args.seed + args.seeds):
        directory = base / f"seed-{seed}"
        settings = Settings(
            seed=seed, duration_s=per_seed, clients=args.clients, nemeses=args.nemeses,
            faults=faults, network=network,
        )  # fmt: skip
        print(f"torture: seed {seed}, {per_seed:.0f} s of clients, in {directory}", flush=True)
        result = asyncio.run(run(settings, directory))
        results.append(result)
        if result.ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(failure(result), flush=True)
    if args.dir is None and all(r.ok for r in results):
        shutil.rmtree(base, ignore_errors=True)
    text = report(results)
    if args.network == "auto" and why_not:
        text += f"\n(partitions through the fault proxies: no network namespaces here: {why_not})"
    print(text)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
