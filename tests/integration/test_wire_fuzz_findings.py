"""Found by the wire fuzzer (tests/torture/test_wire_fuzz.py), on a real node.

- A request that does not parse as its message is the caller's mistake:
  INVALID_ARGUMENT naming the message type, on the client port and the peer
  port alike. grpc.aio answers UNKNOWN ("Unexpected DecodeError") by itself.
- grpc's health Watch streams its status: the client port's admission control
  wrapped every streaming handler as an async generator, and the health
  servicer's Watch is a coroutine, so every health Watch ended UNKNOWN.
- A peer call that proves nothing learns nothing: the peer port checked the
  hello's cluster name and node id before the caller's proof, so an
  unauthenticated caller was told the cluster's name and which node ids exist.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgekv.local.launcher import NodeProcess, running_node, write_cluster_file
from edgekv.v1 import kv_pb2, replication_pb2, replication_pb2_grpc

pytestmark = pytest.mark.integration

JUNK = b"\x00"  # field number 0: never a valid protobuf message
SECRET = b"0123456789abcdef0123456789abcdef-findings"


def raw_call(endpoint: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(endpoint) as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(method)(payload, timeout=10)
    return info.value


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("/edgekv.v1.KV/Get", "edgekv.v1.GetRequest"),
        ("/edgekv.v1.KV/Write", "edgekv.v1.WriteRequest"),
        ("/edgekv.v1.Cluster/Status", "edgekv.v1.StatusRequest"),
    ],
)
def test_undecodable_request_on_the_client_port_is_invalid_argument(
    shared_node: NodeProcess, method: str, message: str
) -> None:
    error = raw_call(shared_node.endpoint, method, JUNK)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in (error.details() or "")


@pytest.fixture(scope="module")
def node_with_a_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """node-1 of a two-node cluster file with a peer secret (node-2 never started)."""
    directory = tmp_path_factory.mktemp("fuzz-findings")
    (directory / "peer.secret").write_bytes(SECRET)
    security = {"auth": {"mode": "disabled"}, "peer_secret_file": str(directory / "peer.secret")}
    nodes = (("node-1", "local"), ("node-2", "local"))
    path = write_cluster_file(
        directory, nodes=nodes, cluster="secret-name", extra={"security": security}
    )
    with running_node(path, "node-1") as node:
        yield node


def test_undecodable_request_on_the_peer_port_is_invalid_argument(
    node_with_a_peer: NodeProcess,
) -> None:
    peer = node_with_a_peer.info["peer_endpoint"]
    error = raw_call(peer, "/edgekv.v1.Replication/Heartbeat", JUNK)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "edgekv.v1.HeartbeatRequest" in (error.details() or "")
    with grpc.insecure_channel(peer) as channel:
        replicate = channel.stream_stream("/edgekv.v1.Replication/Replicate")
        with pytest.raises(grpc.RpcError) as info:
            list(replicate(iter([JUNK]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def test_valid_requests_still_decode(shared_node: NodeProcess) -> None:
    with grpc.insecure_channel(shared_node.endpoint) as channel:
        raw = channel.unary_unary("/edgekv.v1.KV/Get")(
            kv_pb2.GetRequest(key=b"malformed/none").SerializeToString(), timeout=10
        )
    assert not kv_pb2.GetResponse.FromString(raw).found


def test_health_watch_streams_the_serving_status(shared_node: NodeProcess) -> None:
    with grpc.insecure_channel(shared_node.endpoint) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="edgekv.v1.KV"), timeout=10
        )
        first = next(stream)
        stream.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "hello",
    [
        replication_pb2.PeerHello(node_id="node-2", cluster="guess"),
        replication_pb2.PeerHello(node_id="nobody", cluster="secret-name"),
        replication_pb2.PeerHello(node_id="node-2", cluster="secret-name"),
    ],
)
def test_unproven_peer_call_learns_neither_cluster_nor_members(
    node_with_a_peer: NodeProcess, hello: replication_pb2.PeerHello
) -> None:
    with grpc.insecure_channel(node_with_a_peer.info["peer_endpoint"]) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Heartbeat(replication_pb2.HeartbeatRequest(hello=hello), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
    details = info.value.details() or ""
    assert "secret-name" not in details and "cluster file" not in details
