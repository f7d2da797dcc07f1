"""A node whose disk fills up refuses writes clearly, says so on health, keeps serving
reads, and takes writes again by itself once space is freed (storage/recovery.py).

Found by the torture suite's disk fault (#15): RocksDB keeps a failed write's error
until the database is reopened, so the node refused every write until it was
restarted, while health still said SERVING. A real node on a 32 MiB tmpfs (root only).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import edgekv
from edgekv import Client
from edgekv.client.retry import RetryPolicy
from edgekv.local.diskquota import QuotaUnavailable, fill, mount_tmpfs, unfill, unmount
from edgekv.local.launcher import running_node, write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until

pytestmark = pytest.mark.integration

QUOTA_MB = 32


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(cluster file, data directory on a 32 MiB tmpfs) of one node with metrics."""
    path = write_cluster_file(tmp_path, metrics=True)
    data = tmp_path / "data" / "node-1"
    try:
        mount_tmpfs(data, QUOTA_MB)
    except QuotaUnavailable as exc:
        pytest.skip(f"no small disk for the node: {exc}")
    try:
        yield path, data
    finally:
        unmount([data])


def _health(channel: grpc.Channel, service: str = "") -> int:
    req = health_pb2.HealthCheckRequest(service=service)
    return int(health_pb2_grpc.HealthStub(channel).Check(req, timeout=5).status)


def _metric(port: int, name: str) -> float:
    return scrape_metrics(port)[name][0][1]


def test_full_disk_refuses_writes_then_recovers_without_restart(
    small_disk: tuple[Path, Path],
) -> None:
    path, data = small_disk
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    acked: dict[str, str] = {}
    with running_node(path, "node-1") as node, grpc.insecure_channel(node.endpoint) as ch:
        port = node.info["metrics_port"]
        client = Client(node.endpoint, discover=False, retry=RetryPolicy(max_attempts=1))
        with client:
            for i in range(20):
                client.put(f"k/{i}", f"v{i}")
                acked[f"k/{i}"] = f"v{i}"
            fill(data)
            refused = None
            for i in range(20, 20_000):  # the WAL's last page may take a few more
                try:
                    client.put(f"k/{i}", f"v{i}" * 50)
                except edgekv.ResourceExhausted as exc:
                    refused = exc
                    break
                acked[f"k/{i}"] = f"v{i}" * 50
            assert refused is not None, "writes to a full disk were never refused"
            for _ in range(3):  # refused before RocksDB: the same clear error every time
                with pytest.raises(edgekv.ResourceExhausted) as later:
                    client.put("k/while-full", "x")
                assert f"data directory {data} is full" in str(later.value)
                assert "write through another PoP" in str(later.value)
            wait_until(lambda: _health(ch) == not_serving, timeout_s=30, what="NOT_SERVING")
            assert _health(ch, "edgekv.v1.KV") == not_serving
            assert _health(ch, "edgekv.v1.Cluster") == serving
            assert _metric(port, "edgekv_storage_degraded") == 1
            for key, value in acked.items():  # reads are still served
                entry = client.get(key)
                assert entry is not None and entry.value == value.encode(), key

            unfill(data)
            wait_until(
                lambda: client.put("k/after", "back") is not None,
                timeout_s=60, interval_s=0.2, what="a write accepted again without a restart",
            )  # fmt: skip
            acked["k/after"] = "back"
            wait_until(lambda: _health(ch) == serving, timeout_s=30, what="SERVING again")
            assert _metric(port, "edgekv_storage_degraded") == 0
            assert _metric(port, "edgekv_storage_reopens_total") >= 1
            for key, value in acked.items():
                entry = client.get(key)
                assert entry is not None and entry.value == value.encode(), key
            assert client.get("k/while-full") is None  # refused, so never stored
    # Nothing acknowledged before, during or after the reopen is lost across a restart.
    with running_node(path, "node-1") as node, Client(node.endpoint, discover=False) as client:
        for key, value in acked.items():
            entry = client.get(key)
            assert entry is not None and entry.value == value.encode(), key
