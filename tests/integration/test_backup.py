"""Backup of a live node under write load, restore, and convergence with the cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import running_node, write_cluster_file
from edgekv.local.wait import assert_converged, scrape_metrics, wait_until
from edgekv.storage.backup import MARKER, create_checkpoint
from edgekv.storage.engine import Engine
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def synced(cluster: LocalCluster, node: str) -> float:
    """The fewest completed anti-entropy syncs of ``node`` with one of its peers."""
    samples = scrape_metrics(cluster.nodes[node].info["metrics_port"])
    return min((value for _, value in samples.get("edgekv_antientropy_syncs_total", [])), default=0)


def test_backup_under_load_restores_to_a_node_that_converges(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=(("r1", 0.0, 0.0), ("r2", 1.0, 1.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")),
        extra={"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}},
        metrics=True,
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
            # A backup is restorable once its node has completed a sync with every peer
            # (it holds every delete): on a fast machine 300 writes beat the first one.
            wait_until(lambda: synced(cluster, "b-1") >= 1, timeout_s=30, what="b-1's first syncs")
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


def test_restore_refuses_a_backup_older_than_the_tombstone_grace(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path)
    engine = Engine(tmp_path / "source", "node-0")
    try:
        engine.put(b"k", b"v")
        checkpoint = create_checkpoint(engine, tmp_path / "cp")
    finally:
        engine.close()
    marker = checkpoint / MARKER
    taken = json.loads(marker.read_text())
    assert taken["node_id"] == "node-0"
    four_days_ago = taken["taken_at_ms"] - 4 * 24 * 3600 * 1000  # grace is 3 days by default
    marker.write_text(json.dumps({**taken, "taken_at_ms": four_days_ago}))

    args = ("restore", "--from", str(checkpoint), "--config", str(path), "--node", "node-1")
    out = edgekv(*args)
    assert out.returncode == 1, out.stderr
    assert "older than replication.tombstone_grace_s" in out.stderr and "--force" in out.stderr
    data_dir = tmp_path / "data" / "node-1"
    assert not data_dir.exists()

    out = edgekv(*args, "--force")
    assert out.returncode == 0, out.stderr
    assert (data_dir / "CURRENT").exists() and not (data_dir / MARKER).exists()
    with running_node(path, "node-1") as node, grpc.insecure_channel(node.endpoint) as channel:
        got = kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(key=b"k"), timeout=10)
        assert got.value == b"v" and got.version.origin == "node-0"
