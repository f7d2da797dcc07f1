"""`make run`'s demo, end to end, on the shipped cluster file moved to free ports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgekv.config.loader import load_config
from edgekv.local.launcher import free_ports

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "local" / "cluster.yaml"


def test_shipped_cluster_file_is_valid() -> None:
    config = load_config(SHIPPED)
    assert {r.name for r in config.regions} == {"eu-west", "us-east", "ap-northeast"}
    assert config.placement[0].prefix == b"eu/"


def test_demo_tour_runs_and_proves_residency(tmp_path: Path) -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    ports = iter(free_ports(2 * len(doc["nodes"])))
    for node in doc["nodes"]:
        node["listen"] = f"127.0.0.1:{next(ports)}"
        node["peer_listen"] = f"127.0.0.1:{next(ports)}"
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "edgekv.local.demo", "--config", str(config), "--once"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "visible in iad-1" in out and "visible in nrt-1" in out
    assert "EU-pinned key, forwarded to fra-1" in out
    assert "put eu/user/7 via iad-1: stored by fra-1" in out
    assert out.count(", 0 violations") == 3
    assert "Traceback" not in proc.stderr
