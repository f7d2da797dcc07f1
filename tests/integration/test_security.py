"""Real TLS, mutual TLS between peers, and bearer tokens, on real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import edgekv
from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.server.auth import hash_token
from edgekv.tls import create_ca, issue_cert
from edgekv.v1 import replication_pb2, replication_pb2_grpc

pytestmark = pytest.mark.integration

TOKENS = {"reader": "r-secret", "writer": "w-secret", "app": "a-secret", "ops": "o-secret"}
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"))
REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_dir = tmp_path / "pki"
    create_ca(ca_dir)
    for node, _ in NODES:
        issue_cert(ca_dir, node, ["127.0.0.1"])
    return ca_dir


@pytest.fixture
def secure(tmp_path: Path, pki: Path) -> Iterator[LocalCluster]:
    security = {
        "tls": {
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "{node}.pem"),
            "key_file": str(pki / "{node}-key.pem"),
        },
        "auth": {
            "mode": "tokens",
            "tokens": [
                {"name": "reader", "sha256": hash_token(TOKENS["reader"]).hex(), "scope": "read"},
                {"name": "writer", "sha256": hash_token(TOKENS["writer"]).hex(), "scope": "write"},
                {"name": "app", "sha256": hash_token(TOKENS["app"]).hex(), "scope": "write",
                 "prefixes": ["app/"]},
                {"name": "ops", "sha256": hash_token(TOKENS["ops"]).hex(), "scope": "admin"},
            ],
        },
    }  # fmt: skip
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, placement=(("eu/", ["eu-west"]),),
        extra={"security": security, "replication": {"heartbeat_interval_s": 0.2}},
    )  # fmt: skip
    with LocalCluster(path) as cluster:
        cluster.start()
        yield cluster


def client(cluster: LocalCluster, node: str, pki: Path, token: str | None) -> Client:
    return Client(
        cluster.endpoint(node), discover=False, token=token, tls_ca_file=str(pki / "ca.pem"),
        timeout_s=5,
    )  # fmt: skip


def test_tls_and_mtls_replication_work_with_the_cluster_ca(secure: LocalCluster, pki: Path) -> None:
    with (
        client(secure, "fra-1", pki, TOKENS["writer"]) as fra,
        client(secure, "iad-1", pki, TOKENS["reader"]) as iad,
    ):
        fra.put("k", "v")
        entry = wait_until(lambda: iad.get("k"), timeout_s=15, what="replication over mTLS")
        assert entry.value == b"v"
        # Forwarding crosses nodes over TLS and carries the caller's token.
        assert iad.get("eu/none") is None


def test_client_without_the_ca_cannot_connect(secure: LocalCluster, tmp_path: Path) -> None:
    plain = Client(secure.endpoint("fra-1"), discover=False, token=TOKENS["writer"], timeout_s=2)
    with plain as c, pytest.raises(edgekv.Unavailable):
        c.get("k")  # plaintext to a TLS port
    other = tmp_path / "other-ca"
    create_ca(other)
    wrong_ca = Client(
        secure.endpoint("fra-1"), discover=False, token=TOKENS["writer"], timeout_s=2,
        tls_ca_file=str(other / "ca.pem"),
    )  # fmt: skip
    with wrong_ca as c, pytest.raises(edgekv.Unavailable):
        c.get("k")  # the server's certificate is not from this CA


def test_peer_with_certificate_from_another_ca_is_refused(
    secure: LocalCluster, pki: Path, tmp_path: Path
) -> None:
    peer = secure.nodes["fra-1"].info["peer_endpoint"]
    hello = replication_pb2.HeartbeatRequest(
        hello=replication_pb2.PeerHello(node_id="iad-1", cluster="test")
    )

    def heartbeat(ca: Path, cert_dir: Path) -> replication_pb2.HeartbeatResponse:
        creds = grpc.ssl_channel_credentials(
            (ca / "ca.pem").read_bytes(),
            (cert_dir / "iad-1-key.pem").read_bytes(),
            (cert_dir / "iad-1.pem").read_bytes(),
        )
        with grpc.secure_channel(peer, creds) as channel:
            return replication_pb2_grpc.ReplicationStub(channel).Heartbeat(hello, timeout=3)

    assert heartbeat(pki, pki).node_id == "fra-1"  # a cluster certificate is accepted
    # A certificate from the cluster CA for another name cannot speak as iad-1.
    issue_cert(pki, "intruder", ["127.0.0.1"])
    creds = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "intruder-key.pem").read_bytes(),
        (pki / "intruder.pem").read_bytes(),
    )
    with grpc.secure_channel(peer, creds) as ch:
        with pytest.raises(grpc.RpcError) as excinfo:
            replication_pb2_grpc.ReplicationStub(ch).Heartbeat(hello, timeout=3)
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert "certificate is for intruder" in excinfo.value.details()  # type: ignore[attr-defined]
    rogue = tmp_path / "rogue"
    create_ca(rogue)
    issue_cert(rogue, "iad-1", ["127.0.0.1"])
    with pytest.raises(grpc.RpcError) as excinfo:
        heartbeat(pki, rogue)  # trusts the server, but presents a rogue certificate
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    with (
        grpc.secure_channel(
            peer, grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        ) as ch,
        pytest.raises(grpc.RpcError),
    ):  # no client certificate at all
        replication_pb2_grpc.ReplicationStub(ch).Heartbeat(hello, timeout=3)


def test_certificate_rotation_with_restart(secure: LocalCluster, pki: Path) -> None:
    old = (pki / "fra-1.pem").read_bytes()
    issue_cert(pki, "fra-1", ["127.0.0.1"])  # a new key and certificate from the same CA
    assert (pki / "fra-1.pem").read_bytes() != old
    secure.restart("fra-1")
    with (
        client(secure, "fra-1", pki, TOKENS["writer"]) as fra,
        client(secure, "iad-1", pki, TOKENS["reader"]) as iad,
    ):
        fra.put("after-rotation", "v")
        assert wait_until(lambda: iad.get("after-rotation"), timeout_s=15, what="replication")


@pytest.mark.parametrize(
    ("who", "call", "error"),
    [
        (None, lambda c: c.get("k"), edgekv.EdgeKVError),
        ("wrong", lambda c: c.get("k"), edgekv.EdgeKVError),
        ("reader", lambda c: c.put("k", "v"), edgekv.EdgeKVError),
        ("app", lambda c: c.put("other/k", "v"), edgekv.EdgeKVError),
        ("app", lambda c: list(c.scan("")), edgekv.EdgeKVError),
        ("writer", lambda c: c.members() and c._cluster_call("Audit", _audit(), None), None),
    ],
)
def test_tokens_denied(
    secure: LocalCluster, pki: Path, who: str | None, call: object, error: type | None
) -> None:
    token = None if who is None else TOKENS.get(who, "not-a-token")
    with client(secure, "fra-1", pki, token) as c, pytest.raises(edgekv.EdgeKVError) as excinfo:
        call(c)  # type: ignore[operator]
    name = type(excinfo.value).__name__
    expected = "Unauthenticated" if who in (None, "wrong") else "PermissionDenied"
    assert name == expected, excinfo.value
    assert "token" in str(excinfo.value)


def _audit() -> object:
    from edgekv.v1 import cluster_pb2

    return cluster_pb2.AuditRequest()


def test_tokens_allowed_by_scope_and_prefix(secure: LocalCluster, pki: Path) -> None:
    with client(secure, "fra-1", pki, TOKENS["app"]) as app:
        app.put("app/1", "v")
        assert app.get("app/1").value == b"v"  # type: ignore[union-attr]
        assert [e.key for e in app.scan("app/")] == [b"app/1"]
    with client(secure, "iad-1", pki, TOKENS["reader"]) as reader:
        assert wait_until(lambda: reader.get("app/1"), timeout_s=15, what="app/1 at iad")
        assert reader.status().node_id == "iad-1"
    with client(secure, "fra-1", pki, TOKENS["ops"]) as ops:
        resp = ops._cluster_call("Audit", _audit(), None)
        assert resp.violations == 0
    # Probes need no token.
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
    with grpc.secure_channel(secure.endpoint("fra-1"), creds) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_node_refuses_to_start_without_auth_configured(tmp_path: Path) -> None:
    from edgekv.local.launcher import LaunchError, start_node

    path = write_cluster_file(tmp_path, extra={"security": {}})
    with pytest.raises(LaunchError, match=r"security\.auth is not configured"):
        start_node(path, "node-1")
