"""The results of a comparison run: compare.md (tables), compare.json and two PNG plots.

Every figure in the tables carries its ratio to edgekv gRPC unary measured in
the same run ("x0.50": half of edgekv's figure). The plots are drawn with
matplotlib's Agg backend (no display needed); without matplotlib (the smoke run
in `make test` does not install it) the tables are still written and the report
says the plots were skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.compare.edgekv_paths import (
    BASELINE,
    Embedded,
    GrpcStream,
    GrpcStreamAsync,
    GrpcUnary,
    HttpConnect,
    HttpConnectAsync,
)
from bench.compare.measure import WORKLOADS, Figures
from bench.compare.peers import EtcdAdapter, NatsAdapter, RedisAdapter
from bench.compare.servers import STARTED_PIDS

LATENCY_PNG, THROUGHPUT_PNG = "compare-latency.png", "compare-throughput.png"
COLUMNS = (  # (summary key, header, digits)
    ("p50_us", "p50 µs", 0),
    ("p99_us", "p99 µs", 0),
    ("p999_us", "p999 µs", 0),
    ("ops_per_s", "ops/s", 0),
    ("server_cpu_us_per_op", "server CPU µs/op", 1),
    ("client_cpu_us_per_op", "client CPU µs/op", 1),
)
COLOURS = {"edgekv": "tab:blue", "Redis": "tab:red", "etcd": "tab:green", "NATS": "tab:purple"}
# (line style of the CDF, hatch of the bar): one per system of a family.
STYLES: tuple[tuple[Any, str], ...] = (
    ("-", ""),
    ("--", "//"),
    ("-.", ".."),
    (":", "xx"),
    ((0, (5, 1, 1, 1, 1, 1)), "++"),
    ((0, (1, 3)), "oo"),
)
NETWORK_PATHS = (
    GrpcUnary.name, GrpcStream.name, GrpcStreamAsync.name, HttpConnect.name, HttpConnectAsync.name,
)  # fmt: skip


def machine() -> dict[str, str]:
    """Cores, CPU model, kernel, Python and the load average, for the report's header."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=Path(__file__).parent, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_end": load,
        "edgekv_commit": commit or "?",
    }


def command(args: argparse.Namespace) -> str:
    flags = (
        f"--keys {args.keys} --samples {args.samples} --seconds {args.seconds:g} "
        f"--rounds {args.rounds}"
    )
    only = f" --only {' '.join(args.only)}" if args.only else ""
    return f".venv/bin/python -m bench.compare {flags}{only}"


def _cell(value: float, base: float | None, digits: int) -> str:
    text = f"{value:,.{digits}f}"
    if base:
        text += f" (x{value / base:.2f})"
    return text


def _tables(summaries: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines: list[str] = []
    for w in WORKLOADS:
        rows = [(name, s[w.key]) for name, s in summaries.items() if w.key in s]
        if not rows:
            continue
        base = summaries.get(BASELINE, {}).get(w.key)
        lines += ["", f"### {w.title}", ""]
        lines.append("| system | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(COLUMNS))
        for name, s in rows:
            cells = [_cell(s[k], base[k] if base else None, d) for k, _, d in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _goals(summaries: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Issue 14's goals, as ratios of this run (a goal whose systems were not measured is n/a)."""

    def get(name: str, key: str) -> float:  # 0.0: not measured
        return summaries.get(name, {}).get("get", {}).get(key, 0.0)

    lines = ["", "### Goals (issue 14), as ratios in this run", ""]
    embedded, redis = get(Embedded.name, "p50_us"), get(RedisAdapter.name, "p50_us")
    if embedded and redis:
        verdict = "met" if redis / embedded >= 10 else "not met"
        lines.append(
            f"- embedded get p50 at least 10x faster than Redis GET: {redis / embedded:.1f}x "
            f"({embedded:,.1f} µs vs {redis:,.0f} µs): {verdict}"
        )
    else:
        lines.append("- embedded get p50 at least 10x faster than Redis GET: n/a in this run")
    network = [n for n in NETWORK_PATHS if get(n, "p50_us")]
    for peer in (EtcdAdapter.name, NatsAdapter.name):
        if not get(peer, "p50_us") or not network:
            lines.append(f"- edgekv ahead of {peer} on get p50 and p99: n/a in this run")
            continue
        ahead = [
            n for n in network
            if get(n, "p50_us") < get(peer, "p50_us") and get(n, "p99_us") < get(peer, "p99_us")
        ]  # fmt: skip
        best = min(network, key=lambda n: get(n, "p50_us"))

        # Each with its ratios to the peer: a win by 0.1 µs reads as what it is.
        margins = [
            f"{n} (p50 x{get(n, 'p50_us') / get(peer, 'p50_us'):.3f}, "
            f"p99 x{get(n, 'p99_us') / get(peer, 'p99_us'):.3f})"
            for n in ahead
        ]
        lines.append(
            f"- edgekv ahead of {peer} on get p50 and p99 on one network path: "
            + (f"met by {', '.join(margins)}" if ahead else "not met")
            + f" ({peer}: p50 {get(peer, 'p50_us'):,.0f} / p99 {get(peer, 'p99_us'):,.0f} µs; "
            f"{best}: {get(best, 'p50_us'):,.0f} / {get(best, 'p99_us'):,.0f} µs)"
        )
    return lines


def write(
    args: argparse.Namespace,
    results: dict[str, dict[str, Figures]],
    skipped: dict[str, str],
    versions: dict[str, dict[str, str]],
    took_s: float,
    load_at_start: str,
) -> Path:
    """Write compare.md, compare.json and the plots into ``args.out``; the .md's path."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summaries = {
        name: {key: f.summary() for key, f in figs.items() if f.ops}
        for name, figs in results.items()
    }
    info = {**machine(), "load_average_at_start": load_at_start}
    plots = _plots(out, results)
    md = [
        "# edgekv next to Redis, etcd and NATS",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {took_s:.0f} s with "
        f"`{command(args)}` (`make bench` runs it with the defaults).",
        "",
        f"Machine: {info['cores']} cores, {info['cpu']}, Linux {info['kernel']}, Python "
        f"{info['python']}, edgekv at {info['edgekv_commit']}; load average "
        f"{info['load_average_at_start']} at the start, {info['load_average_at_end']} at the end.",
        "",
        f"Dataset: {args.keys:,} keys of 100 bytes in every system. One client process on "
        "loopback, servers placed by the kernel (nothing pinned). The systems run their share "
        f"of each workload in {args.rounds} interleaved rounds, in a fresh random order each "
        "round. Each figure is followed by its ratio to **edgekv gRPC unary** in the same run "
        "(x0.50: half of edgekv's figure): below 1 is less time, less CPU, or (for ops/s) "
        "fewer operations. Server CPU is the "
        "server process's user + system time over the operations; client CPU is this process's.",
        "",
        "| system | server | client | settings |",
        "|---|---|---|---|",
    ]
    for name, v in versions.items():
        md.append(
            f"| {name} | {v.get('server', '?')} | {v.get('client', '?')} | {v.get('options', '')} |"
        )
    if skipped:
        md += ["", "Skipped:", ""]
        md += [f"- {name}: {why}" for name, why in skipped.items()]
    md += _goals(summaries)
    md += _tables(summaries)
    md += ["", "### Plots", ""]
    md += [f"![{alt}]({png})" for alt, png in plots] if plots else [_no_plots()]
    md.append("")
    path = out / "compare.md"
    path.write_text("\n".join(md))
    doc: dict[str, Any] = {
        "command": command(args), "machine": info, "versions": versions,
        "skipped": skipped, "results": summaries, "server_pids": STARTED_PIDS,
    }  # fmt: skip
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    return path


def _no_plots() -> str:
    try:
        importlib.metadata.version("matplotlib")
    except importlib.metadata.PackageNotFoundError:
        return "Plots skipped: matplotlib is not installed (pip install -e '.[bench]')."
    return "Plots skipped: no results to draw."


def _plots(out: Path, results: dict[str, dict[str, Figures]]) -> list[tuple[str, str]]:
    try:
        import matplotlib
    except ImportError:
        return []
    if not results:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style: dict[str, tuple[str, tuple[Any, str]]] = {}
    used: dict[str, int] = {}
    for name in results:
        family = next((f for f in COLOURS if name.startswith(f)), "edgekv")
        style[name] = (COLOURS[family], STYLES[used.get(family, 0) % len(STYLES)])
        used[family] = used.get(family, 0) + 1

    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels = [w for w in WORKLOADS if any(figs[w.key].ops for figs in results.values())]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(13, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, w in zip(axes.flat, panels, strict=False):
        for name, figs in results.items():
            s = sorted(figs[w.key].samples_us)
            if not s:
                continue
            step = max(1, len(s) // 2000)
            xs = [*s[::step], s[-1]]
            ys = [100.0 * i * step / len(s) for i in range(len(xs) - 1)] + [100.0]
            colour, (line, _) = style[name]
            ax.plot(xs, ys, color=colour, linestyle=line, label=name, linewidth=1.5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"latency CDF: {w.title}")
        ax.set_xlabel("latency, µs (log scale)")
        ax.set_ylabel("% of calls at most")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle("latency CDFs (one client process on loopback; log scale)")
    fig.tight_layout()
    fig.savefig(out / LATENCY_PNG, dpi=90)
    plt.close(fig)

    names = list(results)
    bars = [w for w in WORKLOADS if w.key in ("get", "get_x8", "mix_x8")]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [
            results[name][w.key].summary()["ops_per_s"] if results[name][w.key].ops else 0
            for w in bars
        ]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(bars))]
        colour, (_, hatch) = style[name]
        drawn = ax.bar(xs, values, width, label=name, color=colour, hatch=hatch, edgecolor="white")
        ax.bar_label(
            drawn,
            labels=[f"{v:,.0f}" if v else "n/a" for v in values],
            fontsize=7,
            rotation=90,
            padding=2,
        )
    ax.set_xticks(range(len(bars)), [w.title for w in bars])
    ax.set_ylabel("operations per second")
    ax.set_title("throughput (one client process on loopback)")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(out / THROUGHPUT_PNG, dpi=90)
    plt.close(fig)
    return [("latency CDFs per system", LATENCY_PNG), ("throughput per system", THROUGHPUT_PNG)]
