"""bench/compare in smoke mode (tiny counts), so the benchmark `make bench` runs cannot rot.

The run must always measure edgekv's paths that this build has (gRPC unary and
HTTP/Connect); every other system is either measured or skipped with a reason
(a peer server that is not installed: the smoke run never installs one). Every
server process it started must be gone when it exits, also when it is
interrupted (Ctrl-C) half-way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.compare.edgekv_paths import PATHS
from bench.compare.measure import WORKLOADS
from bench.compare.peers import PEERS
from edgekv.local.launcher import pid_alive

ROOT = Path(__file__).resolve().parents[2]
ALWAYS = ("edgekv gRPC unary", "edgekv HTTP/Connect")

pytestmark = pytest.mark.integration


def compare(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.compare", "--smoke", *args]


def wait_gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_compare_smoke_measures_edgekv_and_accounts_for_every_system(tmp_path: Path) -> None:
    proc = subprocess.run(
        compare("--out", str(tmp_path)), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    doc = json.loads((tmp_path / "compare.json").read_text())
    results, skipped = doc["results"], doc["skipped"]
    for name in ALWAYS:
        assert set(results[name]) == {w.key for w in WORKLOADS}, results[name]
        assert all(f["ops"] > 0 and f["p50_us"] > 0 for f in results[name].values())
    every = [cls.name for cls in (*PATHS, *PEERS)]
    for name in every:  # measured, or skipped with the reason
        assert (name in results) != (name in skipped), name
        assert name in results or len(skipped[name]) > 10, skipped
    table = (tmp_path / "compare.md").read_text()
    assert "| edgekv gRPC unary | " in table and "(x1.00)" in table
    assert "python -m bench.compare" in table and "Machine: " in table
    assert doc["server_pids"] and not wait_gone(doc["server_pids"]), doc["server_pids"]


def test_compare_interrupted_stops_every_server(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        compare("--out", str(tmp_path)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := re.match(r"started .*: pid (\d+),", line):
                pids.append(int(m.group(1)))
            if line.startswith("round 1/"):  # every server is up, the measuring goes on
                os.kill(proc.pid, signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert pids, "the run printed no server it started"
    assert not wait_gone(pids), f"still running after Ctrl-C: {pids}\n{rest}"
    assert not (tmp_path / "compare.md").exists()
