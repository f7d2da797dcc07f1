"""Work bounded in bytes at real nodes: anti-entropy pages, scan pages, BatchGet, Watch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"))
FAST = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0, "log_trim_interval_s": 0.2}
BIG = 40 * 1024
N_BIG = 500
# Values of tens of KiB with messages sized for them (a peer accepts 4 x 128 KiB):
# 500 x 40 KiB is then far more than one message, as 20,000 such values are at
# the default 4 MiB, and 3 records fill a page.
SMALL_MESSAGES = {"max_value_bytes": 64 * 1024, "max_message_bytes": 128 * 1024}


def make_cluster(tmp_path: Path, **extra: Any) -> LocalCluster:
    replication = {**FAST, **extra.pop("replication", {})}
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, extra={"replication": replication, **extra}
    )
    return LocalCluster(path)


def versions(endpoint: str, prefix: bytes) -> dict[bytes, tuple[int, str]]:
    """key -> version of every live key under ``prefix`` (a keys-only scan: small pages)."""
    out: dict[bytes, tuple[int, str]] = {}
    with grpc.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        token = b""
        while True:
            page = stub.Scan(
                kv_pb2.ScanRequest(prefix=prefix, limit=5000, page_token=token, keys_only=True),
                timeout=10,
            )
            out.update((i.key, (i.version.timestamp, i.version.origin)) for i in page.items)
            token = page.next_page_token
            if not token:
                return out


def write_big(endpoint: str, prefix: bytes, n: int = N_BIG, size: int = BIG) -> None:
    """``n`` keys of ``size`` bytes (value i repeated), one Put each."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for i in range(n):
            key = b"%s%05d" % (prefix, i)
            stub.Put(kv_pb2.PutRequest(key=key, value=value(i, size)), timeout=30)


def value(i: int, size: int = BIG) -> bytes:
    return (b"%05d" % i) * (size // 5)


def assert_big_converged(cluster: LocalCluster, prefix: bytes, timeout_s: float) -> None:
    want = versions(cluster.endpoint("fra-1"), prefix)
    assert len(want) == N_BIG
    wait_until(
        lambda: versions(cluster.endpoint("iad-1"), prefix) == want,
        timeout_s=timeout_s,
        what=f"iad-1 to hold the {N_BIG} big records of fra-1",
    )
    with grpc.insecure_channel(cluster.endpoint("iad-1")) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for i in (0, N_BIG // 2, N_BIG - 1):
            got = stub.Get(kv_pb2.GetRequest(key=b"%s%05d" % (prefix, i)), timeout=5)
            assert got.found and got.value == value(i)


def test_peer_past_log_retention_repaired_with_values_of_tens_of_kib(tmp_path: Path) -> None:
    # 500 x 40 KiB = 20 MB: far more than a peer message may carry, so anti-entropy
    # must page by bytes; moving up to 1,000 records per call failed at the same
    # chunk forever (RESOURCE_EXHAUSTED).
    with make_cluster(
        tmp_path, replication={"log_retention_entries": 50}, limits=SMALL_MESSAGES
    ) as cluster:
        cluster.start()
        cluster.stop("iad-1")
        write_big(cluster.endpoint("fra-1"), b"big/")
        cluster.start(["iad-1"])
        assert_big_converged(cluster, b"big/", timeout_s=60)


def test_empty_replacement_node_converges_with_values_of_tens_of_kib(tmp_path: Path) -> None:
    # The first convergence is log shipping (batches bounded by the same budget),
    # the second anti-entropy onto the empty data directory.
    with make_cluster(
        tmp_path, replication={"log_retention_entries": 10}, limits=SMALL_MESSAGES
    ) as cluster:
        cluster.start()
        write_big(cluster.endpoint("fra-1"), b"rep/")
        assert_big_converged(cluster, b"rep/", timeout_s=60)
        cluster.stop("iad-1")
        shutil.rmtree(cluster.config.node("iad-1").data_dir)
        cluster.start(["iad-1"])
        assert_big_converged(cluster, b"rep/", timeout_s=60)
