"""The local data story: where data lives, `cluster up --fresh`, ready files that go away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgekv.errors import EdgeKVError
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import running_node, sweep_ready_files, write_cluster_file
from edgekv.local.wait import wait_until

pytestmark = pytest.mark.integration

EDGEKV = Path(sys.executable).parent / "edgekv"
TWO_NODES = (("node-1", "local"), ("node-2", "local"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_ready_file_removed_on_clean_exit(cluster_file: Path) -> None:
    with running_node(cluster_file, "node-1") as node:
        assert node.ready_file.exists()
    assert node.proc.returncode == 0
    assert not node.ready_file.exists()


def test_sweep_ready_files_removes_dead_pids_keeps_live(tmp_path: Path) -> None:
    stale = tmp_path / "node-1.ready.json"
    stale.write_text(json.dumps({"pid": _dead_pid()}))
    garbled = tmp_path / "node-2.ready.json"
    garbled.write_text("{")
    live = tmp_path / "node-3.ready.json"
    live.write_text(json.dumps({"pid": os.getpid()}))
    assert sweep_ready_files(tmp_path) == {"node-3": os.getpid()}
    assert not stale.exists() and not garbled.exists() and live.exists()


def test_remove_data_refused_while_a_node_runs(tmp_path: Path) -> None:
    config = write_cluster_file(tmp_path, nodes=TWO_NODES)
    (tmp_path / "data" / "node-1").mkdir(parents=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "node-2.ready.json").write_text(json.dumps({"pid": os.getpid()}))
    local = LocalCluster(config, run_dir=run_dir, proxies=False)
    with local, pytest.raises(EdgeKVError, match=r"still running: node-2 \(pid \d+\)"):
        local.remove_data()
    assert (tmp_path / "data" / "node-1").is_dir()


def test_cluster_up_fresh_deletes_only_its_nodes_data(tmp_path: Path) -> None:
    config = write_cluster_file(tmp_path, nodes=TWO_NODES)
    data = tmp_path / "data"
    for node_id in ("node-1", "node-2"):
        (data / node_id).mkdir(parents=True)
        (data / node_id / "old-run").write_text("stale")
    (data / "other").mkdir()
    (data / "other" / "keep").write_text("not this cluster's")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "node-1.ready.json").write_text(json.dumps({"pid": _dead_pid()}))
    proc = subprocess.Popen(
        [str(EDGEKV), "cluster", "up", "--config", str(config), "--run-dir", str(run_dir),
         "--fresh"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None

        def serving() -> bool:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            return "serving" in line or not line

        wait_until(serving, timeout_s=60, interval_s=0, what="cluster up to serve")
        out = "".join(lines)
        assert "serving" in out, out
        assert f"--fresh: deleting the data of this cluster's nodes: {data / 'node-1'}" in out
        assert "--fresh: 2 data directories deleted" in out
        assert f"data {data / 'node-2'}" in out
        assert not (data / "node-1" / "old-run").exists()
        assert not (data / "node-2" / "old-run").exists()
        assert (data / "other" / "keep").read_text() == "not this cluster's"
        assert sorted(p.name for p in run_dir.glob("*.ready.json")) == [
            "node-1.ready.json",
            "node-2.ready.json",
        ]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert list(run_dir.glob("*.ready.json")) == []
