"""Data residency and geo-routing on a 3-region cluster of real nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import assert_converged, wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
PLACEMENT = (("eu/", ["eu-west"]), ("eu/shared/", ["eu-west", "us-east", "ap-northeast"]))
FAST = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}


def make_cluster(tmp_path: Path) -> LocalCluster:
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, placement=PLACEMENT, extra={"replication": FAST}
    )
    return LocalCluster(path)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with make_cluster(tmp_path) as c:
        c.start()
        yield c


def kv(cluster: LocalCluster, node: str) -> kv_pb2_grpc.KVStub:
    return kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint(node)))


def all_bytes_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


def run_audit(cluster: LocalCluster, node: str, *extra: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", "audit", "--config", str(cluster.config_path),
         "--node", node, "--json", *extra],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_pinned_key_written_through_us_node_never_leaves_eu(cluster: LocalCluster) -> None:
    secret = os.urandom(16).hex().encode()
    put = kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"eu/user/1", value=secret))
    assert put.served_by == "fra-1" and put.version.origin == "fra-1"
    kv(cluster, "nrt-1").Put(kv_pb2.PutRequest(key=b"eu/ttl", value=secret, ttl_ms=60_000))
    kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"eu/gone", value=secret))
    kv(cluster, "nrt-1").Delete(kv_pb2.DeleteRequest(key=b"eu/gone"))
    kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"eu/shared/x", value=b"everywhere"))
    kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"global/y", value=b"everywhere"))
    for node in ("fra-1", "iad-1", "nrt-1"):
        got = kv(cluster, node).Get(kv_pb2.GetRequest(key=b"eu/user/1"))
        assert got.found and got.value == secret and got.served_by == "fra-1"
        assert not kv(cluster, node).Get(kv_pb2.GetRequest(key=b"eu/gone")).found
    # Unpinned keys replicate everywhere, nested global rule included.
    assert_converged({n: cluster.endpoint(n) for n in ("iad-1", "nrt-1")}, b"global/")
    wait_until(
        lambda: kv(cluster, "nrt-1").Get(kv_pb2.GetRequest(key=b"eu/shared/x")).served_by
        == "nrt-1",
        timeout_s=10, what="eu/shared/x served locally at nrt-1",
    )  # fmt: skip
    # Live audit agrees on every node.
    for node in ("fra-1", "iad-1", "nrt-1"):
        code, report = run_audit(cluster, node)
        assert (code, report["violations"], report["mode"]) == (0, 0, "live"), report
    assert cluster.stop_all() == {node: 0 for node in cluster.node_ids}
    # Offline: no trace of the value or the keys in any file of the US and AP nodes.
    for node in ("iad-1", "nrt-1"):
        blob = all_bytes_under(cluster.config.node(node).data_dir)
        assert secret not in blob
        for key in (b"eu/user/1", b"eu/ttl", b"eu/gone"):
            assert key not in blob, f"{key!r} found in {node}'s files"
        code, report = run_audit(cluster, node, "--offline")
        assert (code, report["violations"], report["mode"]) == (0, 0, "offline")
    assert secret in all_bytes_under(cluster.config.node("fra-1").data_dir)


def test_scan_spanning_placements_is_stitched(cluster: LocalCluster) -> None:
    fra, iad = kv(cluster, "fra-1"), kv(cluster, "iad-1")
    for i in range(30):
        fra.Put(kv_pb2.PutRequest(key=b"eu/s/%02d" % i, value=b"eu"))
        iad.Put(kv_pb2.PutRequest(key=b"ev/s/%02d" % i, value=b"global"))
    wait_until(
        lambda: kv(cluster, "nrt-1").Get(kv_pb2.GetRequest(key=b"ev/s/29")).found,
        timeout_s=10, what="global keys at nrt-1",
    )  # fmt: skip
    seen: list[bytes] = []
    token = b""
    while True:
        page = kv(cluster, "nrt-1").Scan(
            kv_pb2.ScanRequest(start=b"eu/", end=b"ew", limit=7, page_token=token)
        )
        seen += [item.key for item in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(
        [b"eu/s/%02d" % i for i in range(30)] + [b"ev/s/%02d" % i for i in range(30)]
    )
    # A scan entirely inside the pinned prefix is answered by the EU node.
    page = iad.Scan(kv_pb2.ScanRequest(prefix=b"eu/s/", limit=100))
    assert len(page.items) == 30


def test_stitched_scan_and_batch_get_name_the_pop_that_served_each_key(
    cluster: LocalCluster,
) -> None:
    # A PoP answering for pinned keys says so per key (#16): in the proto, the SDK and
    # the CLI's --json, an eu/ item names fra-1 even when Tokyo assembled the page.
    kv(cluster, "fra-1").Put(kv_pb2.PutRequest(key=b"eu/who", value=b"eu"))
    kv(cluster, "nrt-1").Put(kv_pb2.PutRequest(key=b"ev/who", value=b"global"))
    nrt = kv(cluster, "nrt-1")
    page = nrt.Scan(kv_pb2.ScanRequest(start=b"eu/", end=b"ew"))
    assert page.served_by == "nrt-1"
    assert {i.key: i.served_by or page.served_by for i in page.items} == {
        b"eu/who": "fra-1", b"ev/who": "nrt-1",
    }  # fmt: skip
    batch = nrt.BatchGet(kv_pb2.BatchGetRequest(keys=[b"eu/who", b"ev/who", b"eu/none"]))
    assert [r.served_by or batch.served_by for r in batch.results] == ["fra-1", "nrt-1", "fra-1"]
    proc = subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", "scan", "eu/", "--endpoint",
         cluster.endpoint("nrt-1"), "--json"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines and all(line["served_by"] == "fra-1" for line in lines), lines


def test_watch_on_pinned_prefix_from_other_region(cluster: LocalCluster) -> None:
    call = kv(cluster, "nrt-1").Watch(kv_pb2.WatchRequest(prefix=b"eu/w/"), timeout=30)
    events: list[kv_pb2.WatchEvent] = []

    def consume() -> None:
        try:
            for event in call:
                events.append(event)
                if event.deleted:
                    return
        except grpc.RpcError:
            return

    reader = threading.Thread(target=consume)
    reader.start()
    wait_until(
        lambda: kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"eu/w/1", value=b"v")) and events,
        timeout_s=15, what="a forwarded watch event",
    )  # fmt: skip
    kv(cluster, "iad-1").Delete(kv_pb2.DeleteRequest(key=b"eu/w/1"))
    reader.join(15)
    call.cancel()
    assert events[0].served_by == "fra-1" and events[0].key == b"eu/w/1"
    assert events[-1].deleted


def test_write_spanning_placements_refused_atomic_within_one(cluster: LocalCluster) -> None:
    iad = kv(cluster, "iad-1")
    with pytest.raises(grpc.RpcError) as excinfo:
        iad.Write(
            kv_pb2.WriteRequest(
                ops=[
                    kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"eu/a", value=b"1")),
                    kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"us/a", value=b"1")),
                ]
            )
        )
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "spans placement groups" in excinfo.value.details()  # type: ignore[attr-defined]
    assert not iad.Get(kv_pb2.GetRequest(key=b"us/a")).found
    resp = iad.Write(
        kv_pb2.WriteRequest(
            ops=[
                kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"eu/a", value=b"1")),
                kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"eu/b", value=b"2")),
            ]
        )
    )
    assert resp.served_by == "fra-1"
    got = iad.BatchGet(kv_pb2.BatchGetRequest(keys=[b"eu/a", b"x", b"eu/b"]))
    assert [(r.key, r.found) for r in got.results] == [
        (b"eu/a", True),
        (b"x", False),
        (b"eu/b", True),
    ]


def test_only_eu_node_down_eu_calls_unavailable_nothing_stored_elsewhere(
    cluster: LocalCluster,
) -> None:
    cluster.kill("fra-1")
    iad = kv(cluster, "iad-1")
    for call in (
        lambda: iad.Put(kv_pb2.PutRequest(key=b"eu/down", value=b"x"), timeout=10),
        lambda: iad.Get(kv_pb2.GetRequest(key=b"eu/down"), timeout=10),
        lambda: iad.Delete(kv_pb2.DeleteRequest(key=b"eu/down"), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as excinfo:
            call()
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "fra-1" in excinfo.value.details()  # type: ignore[attr-defined]
    # Global keys still work in the other regions.
    assert iad.Put(kv_pb2.PutRequest(key=b"g/ok", value=b"1")).served_by == "iad-1"
    for node in ("iad-1", "nrt-1"):
        code, report = run_audit(cluster, node)
        assert code == 0 and report["violations"] == 0
