"""What a torture run says: a report of what happened, and on failure, how to replay it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .runner import OVERHEAD_S, Result

MAX_VIOLATIONS_SHOWN = 10
MAX_KEYS_SHOWN = 3
PARTITIONS_BY = {
    "netns": "nftables dropping packets between network namespaces",
    "proxy": "fault proxies closing connections",
}


def replay_commands(result: Result) -> str:
    s = result.settings
    if s.quick:
        return (
            f"TORTURE_SEED={s.seed} .venv/bin/python -m pytest -p no:cacheprovider "
            f"tests/torture/test_torture.py"
        )
    return (
        f"make torture SEED={s.seed} DURATION={s.duration_s + OVERHEAD_S:g} SEEDS=1 "
        f"NETWORK={s.network}"
    )


def report(results: Sequence[Result]) -> str:
    """Operations by outcome, faults by kind, checks run, convergence after each heal."""
    lines = []
    ops: Counter[tuple[str, str]] = Counter()
    faults: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    for r in results:
        ops += r.history.counts()
        faults += r.history.fault_counts()
        checks += r.checks
    seeds = ", ".join(str(r.settings.seed) for r in results)
    total_s = sum(r.wall_s for r in results)
    verdict = "PASS" if all(r.ok for r in results) else "FAIL"
    lines.append(f"torture: {verdict}: {len(results)} run(s), seeds {seeds}, {total_s:.0f} s")
    networks = sorted({r.settings.network for r in results})
    lines.append("partitions: " + ", ".join(PARTITIONS_BY.get(n, n) for n in networks))
    lines.append("")
    lines.append("operations       ok  failed  unknown")
    for kind in ("put", "delete", "get"):
        row = [ops[(kind, o)] for o in ("ok", "failed", "unknown")]
        lines.append(f"  {kind:<8} {row[0]:>8} {row[1]:>7} {row[2]:>8}")
    lines.append("faults injected: " + ", ".join(f"{k} {n}" for k, n in sorted(faults.items())))
    lines.append("checks run: " + "; ".join(f"{k} {n}" for k, n in sorted(checks.items())))
    lines.append("")
    for r in results:
        conv = [f.converge_s for f in r.history.faults]
        done = [c for c in conv if c is not None]
        final = f"{r.final_converge_s:.2f} s" if r.final_converge_s is not None else "NOT CONVERGED"
        summary = (
            f"max {max(done):.2f} s, mean {sum(done) / len(done):.2f} s"
            if done
            else "none measured"
        )
        lines.append(
            f"seed {r.settings.seed}: {len(r.history.ops)} ops, {len(r.history.faults)} faults, "
            f"{len(r.violations)} violations, {r.wall_s:.0f} s; convergence after each heal "
            f"({len(done)} of {len(conv)} heals measured): {summary}; after the final heal: {final}"
        )
        for fault in r.history.faults:
            lines.append(f"    {fault.describe()}")
    return "\n".join(lines)


def failure(result: Result) -> str:
    """The seed, the violations, the history around the first violating keys, the replay."""
    lines = [
        f"torture seed {result.settings.seed} found {len(result.violations)} violation(s) "
        f"(node logs and data: {result.directory})",
        *(f"  {v}" for v in result.violations[:MAX_VIOLATIONS_SHOWN]),
    ]
    shown: dict[bytes | None, tuple[int, ...]] = {}
    for v in result.violations:
        if v.key in shown or len(shown) < MAX_KEYS_SHOWN:
            shown[v.key] = (*shown.get(v.key, ()), *v.ops)
    for key, at in shown.items():
        label = repr(key) if key is not None else "every key (last operations)"
        lines += ["", f"history around {label} (> the operations named):"]
        lines.append(result.history.around(key, at))
    history_file = result.directory / "history.jsonl"
    result.history.save(history_file)
    lines += ["", f"the whole history: {history_file}", "replay with:", replay_commands(result)]
    return "\n".join(lines)
