"""Backup of a live node under write load, restore, and convergence with the cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import assert_converged, wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def test_backup_under_load_restores_to_a_node_that_converges(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=(("r1", 0.0, 0.0), ("r2", 1.0, 1.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")),
        extra={"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}},
    )
    with LocalCluster(path) as cluster:
        cluster.start()
        acked: list[bytes] = []
        stop = threading.Event()

        def load() -> None:
            with grpc.insecure_channel(cluster.endpoint("a-1")) as ch:
                kv = kv_pb2_grpc.KVStub(ch)
                i = 0
                while not stop.is_set():
                    key = b"bk/%06d" % i
                    kv.Put(kv_pb2.PutRequest(key=key, value=key), timeout=5)
                    acked.append(key)
                    i += 1

        writer = threading.Thread(target=load)
        writer.start()
        try:
            wait_until(lambda: len(acked) > 300, timeout_s=30, what="writes before the backup")
            dest = tmp_path / "backups" / "b-1"
            out = edgekv("backup", "--dest", str(dest), "--endpoint", cluster.endpoint("b-1"))
            assert out.returncode == 0, out.stderr
            assert "backup written to" in out.stdout and (dest / "CURRENT").exists()
            n = len(acked)
            wait_until(lambda: len(acked) > n + 300, timeout_s=30, what="writes after the backup")
        finally:
            stop.set()
            writer.join(10)
        # b-1 dies; it is replaced from the backup.
        cluster.kill("b-1")
        data_dir = cluster.config.node("b-1").data_dir
        shutil.rmtree(data_dir)
        out = edgekv("restore", "--from", str(dest), "--config", str(path), "--node", "b-1")
        assert out.returncode == 0, out.stderr
        cluster.start(["b-1"])
        data = assert_converged(
            {n: cluster.endpoint(n) for n in cluster.node_ids}, b"bk/", timeout_s=60
        )
        assert set(acked) <= set(data)


def test_restore_refuses_a_non_empty_data_dir(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path)
    data_dir = tmp_path / "data" / "node-1"
    data_dir.mkdir(parents=True)
    (data_dir / "something").write_text("x")
    checkpoint = tmp_path / "cp"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_text("MANIFEST-000001\n")
    out = edgekv("restore", "--from", str(checkpoint), "--config", str(path), "--node", "node-1")
    assert out.returncode == 1 and "is not empty" in out.stderr
