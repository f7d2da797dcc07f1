"""The peer port without TLS: the cluster peer secret, node identity and residency, on real nodes.

Every peer RPC must prove the node id its hello claims, and may only reach
placements and keys that node's region may hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import LaunchError, running_node, start_node, write_cluster_file
from edgekv.local.wait import assert_converged, scrape_metrics, wait_until
from edgekv.server.auth import hash_token
from edgekv.server.peer_auth import PEER_AUTH_METADATA, PEER_ID_METADATA, credential
from edgekv.storage import digest
from edgekv.v1 import kv_pb2, kv_pb2_grpc, replication_pb2, replication_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
PLACEMENT = (("eu/", ["eu-west"]), ("eu/shared/", ["eu-west", "us-east", "ap-northeast"]))
FAST = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0, "log_trim_interval_s": 0.2}
SECRET = b"0123456789abcdef0123456789abcdef-test-peer-secret"
CLUSTER = "test"
PINNED_VALUE = b"PINNED-EU-VALUE-" + b"q" * 16


def write_secret(directory: Path, secret: bytes = SECRET) -> Path:
    path = directory / "peer.secret"
    path.write_bytes(secret + b"\n")
    return path


def secret_cluster_file(tmp_path: Path, *, nodes: Any = NODES, **replication: Any) -> Path:
    return write_cluster_file(
        tmp_path, regions=REGIONS, nodes=nodes, placement=PLACEMENT, metrics=True,
        extra={
            "replication": {**FAST, **replication},
            "security": {"auth": {"mode": "disabled"},
                         "peer_secret_file": str(write_secret(tmp_path))},
        },
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(secret_cluster_file(tmp_path)) as c:
        c.start()
        yield c


def kv(cluster: LocalCluster, node: str) -> kv_pb2_grpc.KVStub:
    return kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint(node)))


def peer_stub(cluster: LocalCluster, node: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(cluster.nodes[node].info["peer_endpoint"])
    return channel, replication_pb2_grpc.ReplicationStub(channel)


def creds_for(node_id: str, secret: bytes = SECRET, at_ms: int | None = None) -> list[Any]:
    at = int(time.time() * 1000) if at_ms is None else at_ms
    return [
        (PEER_ID_METADATA, node_id),
        (PEER_AUTH_METADATA, credential(secret, CLUSTER, node_id, at)),
    ]


def hello(node_id: str = "iad-1") -> replication_pb2.PeerHello:
    return replication_pb2.PeerHello(node_id=node_id, cluster=CLUSTER)


def record(value: bytes, origin: str = "iad-1") -> bytes:
    from edgekv import native

    return bytes(
        native.encode_record(False, (int(time.time() * 1000) + 1) << 16, 0, origin.encode(), value)
    )


def every_peer_call(
    stub: Any, metadata: Any, node_id: str = "iad-1"
) -> dict[str, grpc.RpcError | Any]:
    """Call every method of edgekv.v1.Replication once; method name -> response or error."""
    h = hello(node_id)
    pushed = replication_pb2.KeyRecord(key=b"global/pushed", record=record(b"pwned"))
    replicated = replication_pb2.LogEntry(seq=1, key=b"global/replicated", record=record(b"pwned"))
    handed = replication_pb2.KeyRecord(key=b"global/handed", record=record(b"pwned"))
    requests = {
        "Heartbeat": replication_pb2.HeartbeatRequest(hello=h),
        "GetDigests": replication_pb2.DigestRequest(hello=h, placement=b""),
        "ListBuckets": replication_pb2.ListBucketsRequest(hello=h, placement=b"", buckets=[0, 1]),
        "FetchRecords": replication_pb2.FetchRecordsRequest(hello=h, keys=[b"global/a"]),
        "PushRecords": replication_pb2.RecordBatch(hello=h, records=[pushed]),
        "HandOff": replication_pb2.RecordBatch(hello=h, records=[handed]),
    }
    stream = [
        replication_pb2.ReplicateRequest(hello=h),
        replication_pb2.ReplicateRequest(entries=[replicated], through_seq=1),
    ]
    calls = {
        name: lambda name=name, req=req: getattr(stub, name)(req, metadata=metadata, timeout=5)
        for name, req in requests.items()
    }
    calls["Replicate"] = lambda: list(stub.Replicate(iter(stream), metadata=metadata, timeout=5))
    # Every RPC of the service is covered: a new one must be added here.
    service = replication_pb2.DESCRIPTOR.services_by_name["Replication"]
    assert set(calls) == {m.name for m in service.methods}
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except grpc.RpcError as exc:
            out[name] = exc
    return out


def codes(results: dict[str, Any]) -> dict[str, grpc.StatusCode]:
    return {
        name: (r.code() if isinstance(r, grpc.RpcError) else grpc.StatusCode.OK)
        for name, r in results.items()
    }


def refused(cluster: LocalCluster, node: str) -> dict[tuple[str, str], float]:
    m = scrape_metrics(cluster.nodes[node].info["metrics_port"])
    out = {}
    for name in ("edgekv_peer_refused_total", "edgekv_peer_refused_records_total"):
        for labels, value in m.get(name, []):
            out[(name, labels["reason"])] = value
    return out


def test_peer_calls_without_the_secret_are_refused(cluster: LocalCluster) -> None:
    channel, stub = peer_stub(cluster, "fra-1")
    with channel:
        for metadata in (
            None,  # nothing at all
            creds_for("iad-1", secret=b"another-secret-of-the-right-length-000"),
            [(PEER_ID_METADATA, "iad-1"), (PEER_AUTH_METADATA, "garbage")],
            creds_for("iad-1", at_ms=int(time.time() * 1000) - 3_600_000),  # an hour-old replay
        ):
            got = codes(every_peer_call(stub, metadata))
            assert got == dict.fromkeys(got, grpc.StatusCode.UNAUTHENTICATED), (metadata, got)
    # Nothing pushed or replicated was applied.
    for key in (b"global/pushed", b"global/replicated", b"global/handed"):
        assert not kv(cluster, "fra-1").Get(kv_pb2.GetRequest(key=key)).found
    assert refused(cluster, "fra-1")[("edgekv_peer_refused_total", "unauthenticated")] == 28


def test_peer_with_the_secret_cannot_claim_another_node(cluster: LocalCluster) -> None:
    channel, stub = peer_stub(cluster, "fra-1")
    with channel:
        # iad-1's valid credential, with a hello that says nrt-1.
        results = every_peer_call(stub, creds_for("iad-1"), node_id="nrt-1")
        assert codes(results) == dict.fromkeys(results, grpc.StatusCode.PERMISSION_DENIED)
        assert "its credential is for 'iad-1'" in results["Heartbeat"].details()
        # iad-1's credential relabelled as nrt-1's: the MAC does not match.
        stolen = creds_for("iad-1")[1]
        results = every_peer_call(stub, [(PEER_ID_METADATA, "nrt-1"), stolen], node_id="nrt-1")
        assert codes(results) == dict.fromkeys(results, grpc.StatusCode.UNAUTHENTICATED)
        # The genuine credential works (so the refusals above are about identity).
        ok = stub.Heartbeat(replication_pb2.HeartbeatRequest(hello=hello("iad-1")),
                            metadata=creds_for("iad-1"), timeout=5)  # fmt: skip
        assert ok.node_id == "fra-1"
    for key in (b"global/pushed", b"global/replicated", b"global/handed"):
        assert not kv(cluster, "fra-1").Get(kv_pb2.GetRequest(key=key)).found
    counts = refused(cluster, "fra-1")
    assert counts[("edgekv_peer_refused_total", "identity")] == 7
    assert counts[("edgekv_peer_refused_total", "unauthenticated")] == 7


def test_us_node_cannot_read_eu_records_over_the_peer_port(cluster: LocalCluster) -> None:
    fra = kv(cluster, "fra-1")
    fra.Put(kv_pb2.PutRequest(key=b"eu/user/1", value=PINNED_VALUE))
    fra.Put(kv_pb2.PutRequest(key=b"eu/shared/x", value=b"shared"))
    channel, stub = peer_stub(cluster, "fra-1")
    md = creds_for("iad-1")  # iad-1's real credential: us-east
    denied: list[grpc.RpcError] = []
    with channel:
        eu, keys = b"eu/", replication_pb2.FetchRecordsRequest
        requests = [
            ("GetDigests", replication_pb2.DigestRequest(hello=hello(), placement=eu)),
            ("GetDigests", replication_pb2.DigestRequest(
                hello=hello(), placement=eu, segments=range(digest.SEGMENTS))),
            ("ListBuckets", replication_pb2.ListBucketsRequest(
                hello=hello(), placement=eu, buckets=range(4096))),
            ("FetchRecords", keys(hello=hello(), keys=[b"eu/user/1"])),
            ("FetchRecords", keys(hello=hello(), keys=[b"eu/shared/x", b"eu/user/1"])),
        ]  # fmt: skip
        calls = [
            lambda name=name, req=req: getattr(stub, name)(req, metadata=md, timeout=5)
            for name, req in requests
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as excinfo:
                call()
            assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
            assert "region 'us-east'" in excinfo.value.details()  # type: ignore[attr-defined]
            assert PINNED_VALUE not in excinfo.value.details().encode()  # type: ignore[attr-defined]
            denied.append(excinfo.value)
        # What us-east may hold is served to the same credential.
        shared = stub.FetchRecords(
            replication_pb2.FetchRecordsRequest(hello=hello(), keys=[b"eu/shared/x"]),
            metadata=md, timeout=5,
        )  # fmt: skip
        assert [r.key for r in shared.records] == [b"eu/shared/x"]
        stub.GetDigests(replication_pb2.DigestRequest(hello=hello(), placement=b"eu/shared/"),
                        metadata=md, timeout=5)  # fmt: skip
    counts = refused(cluster, "fra-1")
    assert counts[("edgekv_peer_refused_total", "placement")] == 3
    assert counts[("edgekv_peer_refused_total", "keys")] == 2


def test_cluster_with_a_peer_secret_replicates_and_repairs(tmp_path: Path) -> None:
    with LocalCluster(secret_cluster_file(tmp_path, log_retention_entries=20)) as cluster:
        cluster.start()
        fra = kv(cluster, "fra-1")
        fra.Put(kv_pb2.PutRequest(key=b"g/first", value=b"v"))
        fra.Put(kv_pb2.PutRequest(key=b"eu/pinned", value=PINNED_VALUE))
        endpoints = {n: cluster.endpoint(n) for n in cluster.node_ids}
        assert_converged(endpoints, b"g/", timeout_s=30)
        # Log shipping itself runs with credentials: every replication stream is up.
        for node in cluster.node_ids:
            wait_until(
                lambda node=node: [v for _, v in scrape_metrics(
                    cluster.nodes[node].info["metrics_port"])["edgekv_replication_connected"]]
                == [1.0, 1.0],
                timeout_s=15, what=f"{node}'s replication streams connected",
            )  # fmt: skip
        # nrt-1 misses more writes than the log keeps: anti-entropy repairs it.
        cluster.stop("nrt-1")
        for i in range(200):
            kv(cluster, "iad-1").Put(kv_pb2.PutRequest(key=b"g/%04d" % i, value=b"x%d" % i))
        cluster.start(["nrt-1"])
        data = assert_converged(endpoints, b"g/", timeout_s=60)
        assert len(data) == 201
        repaired = sum(
            value
            for node in cluster.node_ids
            for _, value in scrape_metrics(cluster.nodes[node].info["metrics_port"]).get(
                "edgekv_antientropy_repaired_records_total", []
            )
        )
        assert repaired > 0  # the repair went through anti-entropy, with credentials
        # The pinned key stayed in the EU, and no node refused a peer's call.
        got = kv(cluster, "nrt-1").Get(kv_pb2.GetRequest(key=b"eu/pinned"))
        assert got.value == PINNED_VALUE and got.served_by == "fra-1"
        for node in cluster.node_ids:
            counts = refused(cluster, node)
            assert set(counts.values()) == {0.0}, (node, counts)
            assert SECRET not in cluster.nodes[node].log_path.read_bytes()


def tokens_file(tmp_path: Path, **security: Any) -> Path:
    auth = {"mode": "tokens", "tokens": [
        {"name": "ops", "sha256": hash_token("ops-secret").hex(), "scope": "admin"}]}  # fmt: skip
    return write_cluster_file(
        tmp_path, regions=REGIONS[:2], nodes=NODES[:2],
        extra={"security": {"auth": auth, **security}},
    )  # fmt: skip


def test_tokens_without_peer_authentication_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"security\.insecure_peer_plane: true") as excinfo:
        start_node(tokens_file(tmp_path / "plain"), "fra-1")
    assert "security.peer_secret_file" in str(excinfo.value)
    # Opting in by name starts, with a loud warning.
    with running_node(tokens_file(tmp_path / "opt-in", insecure_peer_plane=True), "fra-1") as n:
        assert "THE PEER PLANE IS UNAUTHENTICATED" in n.log_path.read_text()
    # A peer secret is enough: tokens plus a secret start without the warning.
    path = tokens_file(tmp_path / "secret", peer_secret_file=str(write_secret(tmp_path)))
    with running_node(path, "fra-1") as n:
        assert "UNAUTHENTICATED" not in n.log_path.read_text()


class _LyingPeer(replication_pb2_grpc.ReplicationServicer):
    """Plays fra-1 to a real iad-1: its anti-entropy answers list a pinned key and
    send back records nobody asked for."""

    def __init__(self) -> None:
        self.fetched: list[list[bytes]] = []

    def Heartbeat(self, request: Any, context: Any) -> Any:
        return replication_pb2.HeartbeatResponse(node_id="fra-1", region="eu-west")

    def Replicate(self, requests: Any, context: Any) -> Any:
        for request in requests:
            if not request.HasField("hello"):
                yield replication_pb2.ReplicateAck(acked_seq=request.through_seq)

    def GetDigests(self, request: Any, context: Any) -> Any:
        # Segment 0, bucket 0 differ: one bucket to reconcile.
        one_hot = [1] + [0] * (digest.SEGMENTS - 1)
        buckets = [1] + [0] * (digest.BUCKETS_PER_SEGMENT - 1) if request.segments else []
        return replication_pb2.DigestResponse(segment_digests=one_hot, bucket_digests=buckets)

    def ListBuckets(self, request: Any, context: Any) -> Any:
        ts = record_timestamp()
        return replication_pb2.ListBucketsResponse(entries=[
            replication_pb2.KeyVersion(key=k, timestamp=ts, origin="fra-1")
            for k in (b"global/asked", b"eu/pinned")
        ])  # fmt: skip

    def FetchRecords(self, request: Any, context: Any) -> Any:
        self.fetched.append(list(request.keys))
        return replication_pb2.RecordBatch(records=[
            replication_pb2.KeyRecord(key=k, record=record(b"from-a-liar", origin="fra-1"))
            for k in (b"global/asked", b"global/unasked", b"eu/pinned")
        ])  # fmt: skip

    def PushRecords(self, request: Any, context: Any) -> Any:
        return replication_pb2.PushRecordsResponse(applied=0)


def record_timestamp() -> int:
    return (int(time.time() * 1000) - 1000) << 16


def test_antientropy_applies_only_records_asked_for_and_allowed(tmp_path: Path) -> None:
    from concurrent import futures

    from edgekv.config.loader import load_config
    from edgekv.v1 import cluster_pb2, cluster_pb2_grpc

    path = secret_cluster_file(tmp_path, nodes=NODES[:2])
    liar = _LyingPeer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    replication_pb2_grpc.add_ReplicationServicer_to_server(liar, server)
    fra_peer = load_config(path).node("fra-1").peer_listen
    assert fra_peer is not None and server.add_insecure_port(fra_peer)
    server.start()
    try:
        with running_node(path, "iad-1") as iad:
            channel = grpc.insecure_channel(iad.endpoint)
            stub = kv_pb2_grpc.KVStub(channel)
            got = wait_until(
                lambda: (r := stub.Get(kv_pb2.GetRequest(key=b"global/asked"))).found and r,
                timeout_s=30, what="global/asked pulled by anti-entropy",
            )  # fmt: skip
            assert got.value == b"from-a-liar"
            assert all(b"eu/pinned" not in keys for keys in liar.fetched)  # never asked for
            assert not stub.Get(kv_pb2.GetRequest(key=b"global/unasked")).found
            audit = cluster_pb2_grpc.ClusterStub(channel).Audit(cluster_pb2.AuditRequest())
            assert audit.violations == 0  # eu/pinned is nowhere in data, log or digests
            m = scrape_metrics(iad.info["metrics_port"])
            dropped = {
                labels["reason"]: value for labels, value in m["edgekv_peer_refused_records_total"]
            }
            assert dropped["not_held"] >= 1 and dropped["not_asked"] >= 2
            channel.close()
    finally:
        server.stop(0)
