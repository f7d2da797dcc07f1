"""Tombstones and expired records are collected on real nodes, never too early."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rocksdict import AccessType, Options, Rdict

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import assert_converged, scrape_metrics, wait_until
from edgekv.storage.database import DIGEST_CF, LOG_CF, META_CF
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
GRACE_S = 1.0  # at least antientropy_interval_s; the cut-off test watches 3 of them
FAST = {
    "heartbeat_interval_s": 0.2,
    "antientropy_interval_s": 0.5,
    "log_trim_interval_s": 0.2,
    "tombstone_grace_s": GRACE_S,
    "gc_interval_s": 0.3,
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, extra={"replication": FAST}, metrics=True
    )
    with LocalCluster(path) as c:
        c.start()
        yield c


def stub(cluster: LocalCluster, node: str) -> kv_pb2_grpc.KVStub:
    return kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint(node)))


def collected(cluster: LocalCluster, node: str) -> float:
    port = cluster.nodes[node].info["metrics_port"]
    return scrape_metrics(port)["edgekv_gc_collected_records_total"][0][1]


def stored_records(cluster: LocalCluster, node: str) -> dict[bytes, bytes]:
    """Every record in a stopped node's data column family, tombstones included."""
    cfs = {name: Options(raw_mode=True) for name in (LOG_CF, META_CF, DIGEST_CF)}
    db = Rdict(
        str(cluster.config.node(node).data_dir), Options(raw_mode=True),
        column_families=cfs, access_type=AccessType.read_only(),
    )  # fmt: skip
    try:
        return {k: v for k, v in db.items()}
    finally:
        db.close()


def test_tombstones_and_expired_records_are_collected_everywhere(cluster: LocalCluster) -> None:
    fra = stub(cluster, "fra-1")
    for i in range(20):
        fra.Put(kv_pb2.PutRequest(key=b"g/%02d" % i, value=b"v"))
    fra.Put(kv_pb2.PutRequest(key=b"g/ttl", value=b"short-lived", ttl_ms=200))
    for i in range(10):
        fra.Delete(kv_pb2.DeleteRequest(key=b"g/%02d" % i))
    endpoints = {n: cluster.endpoint(n) for n in cluster.node_ids}
    wait_until(lambda: len(assert_converged(endpoints, b"g/", timeout_s=15)) == 10,
               timeout_s=15, what="10 live keys everywhere once g/ttl expired")  # fmt: skip

    for node in cluster.node_ids:  # 10 tombstones and the expired record, on each node
        wait_until(lambda node=node: collected(cluster, node) >= 11, timeout_s=30,
                   what=f"collection on {node}")  # fmt: skip
    assert len(assert_converged(endpoints, b"g/", timeout_s=15)) == 10
    cluster.stop_all()
    want = {b"g/%02d" % i for i in range(10, 20)}
    for node in cluster.node_ids:
        assert set(stored_records(cluster, node)) == want, node


def test_a_cut_off_peer_holds_collection_back_and_gets_the_delete(
    cluster: LocalCluster,
) -> None:
    fra, nrt = stub(cluster, "fra-1"), stub(cluster, "nrt-1")
    fra.Put(kv_pb2.PutRequest(key=b"p/k", value=b"old"))
    wait_until(lambda: nrt.Get(kv_pb2.GetRequest(key=b"p/k")).found, timeout_s=10,
               what="p/k at nrt-1")  # fmt: skip

    cluster.partition(["fra-1", "iad-1"], ["nrt-1"])
    fra.Delete(kv_pb2.DeleteRequest(key=b"p/k"))
    iad = stub(cluster, "iad-1")
    wait_until(lambda: not iad.Get(kv_pb2.GetRequest(key=b"p/k")).found, timeout_s=10,
               what="the delete at iad-1")  # fmt: skip
    # Well past the grace period: nrt-1 still holds the old value, so nobody may
    # forget the tombstone, or anti-entropy would bring the value back.
    until = time.monotonic() + 3 * GRACE_S
    while time.monotonic() < until:
        assert collected(cluster, "fra-1") == 0 and collected(cluster, "iad-1") == 0
        time.sleep(0.2)
    assert nrt.Get(kv_pb2.GetRequest(key=b"p/k")).value == b"old"

    cluster.heal()
    endpoints = {n: cluster.endpoint(n) for n in cluster.node_ids}
    wait_until(lambda: all(collected(cluster, n) >= 1 for n in cluster.node_ids), timeout_s=30,
               what="collection after the heal")  # fmt: skip
    assert assert_converged(endpoints, b"p/", timeout_s=15) == {}
    for node in cluster.node_ids:
        assert not stub(cluster, node).Get(kv_pb2.GetRequest(key=b"p/k")).found, node
