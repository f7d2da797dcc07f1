"""The SDK's HTTP transport: names, codes and discovery, without a node."""

from __future__ import annotations

import inspect
from typing import Any

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from edgekv.client._codec import error_from_rpc
from edgekv.client._connect import _SERVICES, ConnectRpcError, ConnectUnary, _method_name, is_url
from edgekv.client._http1 import NOT_CONNECTED, Http1Pool, proxy_applies
from edgekv.client._http1_reader import NOT_HTTP1
from edgekv.client._http1_sync import Http1SyncPool
from edgekv.client.discovery import Topology
from edgekv.errors import Unavailable, never_sent
from edgekv.v1 import cluster_pb2


@pytest.mark.parametrize("code", list(Code))
def test_every_connect_code_is_the_grpc_status_of_the_same_name(code: Code) -> None:
    error = ConnectRpcError(ConnectError(code, "the node's words"))
    assert isinstance(error, grpc.RpcError)
    assert error.code().name == ("CANCELLED" if code is Code.CANCELED else code.name)
    assert error.details() == "the node's words"


def test_rpc_names_become_the_generated_clients_method_names() -> None:
    assert [_method_name(m) for m in ("Get", "BatchGet", "Watch", "Members")] == [
        "get", "batch_get", "watch", "members",
    ]  # fmt: skip


def test_urls_are_told_from_grpc_targets() -> None:
    assert is_url("http://h:1") and is_url("https://h:1")
    assert not is_url("h:1") and not is_url("unix:/tmp/s") and not is_url("dns:///h:1")


def members() -> cluster_pb2.MembersResponse:
    return cluster_pb2.MembersResponse(
        members=[
            cluster_pb2.Member(node_id="a", region="r", endpoint="a:1", http_endpoint="http://a:2"),
            cluster_pb2.Member(node_id="b", region="r", endpoint="b:1"),  # no http_listen
        ],
        regions=[cluster_pb2.Region(name="r")],
    )


def test_discovery_over_http_uses_the_doors_and_leaves_out_nodes_without_one() -> None:
    assert [n.endpoint for n in Topology.from_members(members()).nodes] == ["a:1", "b:1"]
    over_http = Topology.from_members(members(), http=True)
    assert [(n.node_id, n.endpoint) for n in over_http.nodes] == [("a", "http://a:2")]
    moved = Topology.from_members(members(), {"b": "http://proxy:9"}, http=True)
    assert [n.endpoint for n in moved.nodes] == ["http://a:2", "http://proxy:9"]


def test_a_write_moves_on_only_when_the_http_connection_was_never_made() -> None:
    refused = (
        "Request failed: error sending request for url (http://127.0.0.1:1/edgekv.v1.KV/Put): "
        "client error (Connect): tcp connect error: Connection refused (os error 111)"
    )
    lost = (
        "Request failed: error sending request for url (http://127.0.0.1:1/edgekv.v1.KV/Put): "
        "client error (SendRequest): connection closed before message completed"
    )
    assert never_sent(grpc.StatusCode.UNAVAILABLE, refused)
    assert not never_sent(grpc.StatusCode.UNAVAILABLE, lost)
    assert not never_sent(grpc.StatusCode.DEADLINE_EXCEEDED, refused)


@pytest.mark.parametrize(
    "said",
    ["client error (SendRequest): invalid HTTP version parsed",
     "client error (SendRequest): received unexpected message from connection"],
)  # fmt: skip
def test_an_http_endpoint_that_answers_in_http2_is_named_a_grpc_port(said: str) -> None:
    error = error_from_rpc(ConnectRpcError(ConnectError(Code.UNAVAILABLE, said)), "http://h:1")
    assert isinstance(error, Unavailable)
    assert "http://h:1: this port does not speak HTTP/1.1" in str(error)
    assert "(http_listen)" in str(error)


@pytest.mark.parametrize(
    "said",
    ["cannot connect over HTTP/1.1: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "IP address mismatch, certificate is not valid for '10.0.0.1'. (_ssl.c:1006)",
     "client error (Connect): invalid peer certificate: NotValidForName"],
)  # fmt: skip
def test_a_certificate_for_other_hosts_is_named_so_not_a_wrong_ca(said: str) -> None:
    error = error_from_rpc(ConnectRpcError(ConnectError(Code.UNAVAILABLE, said)), "https://h:1")
    assert isinstance(error, Unavailable)
    assert "does not name the host you dialled" in str(error)
    assert "not signed by the given CA" not in str(error)


@pytest.mark.parametrize(
    "said",
    ["cannot connect over HTTP/1.1: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "unable to get local issuer certificate (_ssl.c:1006)",
     "client error (Connect): invalid peer certificate: BadSignature",
     "client error (Connect): invalid peer certificate: UnknownIssuer"],
)  # fmt: skip
def test_a_certificate_from_another_ca_is_named_so_on_both_http_clients(said: str) -> None:
    error = error_from_rpc(ConnectRpcError(ConnectError(Code.UNAVAILABLE, said)), "https://h:1")
    assert "https://h:1: TLS handshake failed: the node's certificate is not signed by the " in (
        str(error)
    )


def test_the_asyncio_transports_words_for_never_sent_and_not_http1() -> None:
    refused = f"{NOT_CONNECTED}: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    assert never_sent(grpc.StatusCode.UNAVAILABLE, refused)
    lost = "the connection closed in the middle of the response"
    assert not never_sent(grpc.StatusCode.UNAVAILABLE, lost)
    said = f"{NOT_HTTP1} (Expected HTTP/, RTSP/ or ICE/): b'\\x00\\x00\\x18\\x04'"
    error = error_from_rpc(ConnectRpcError(ConnectError(Code.UNAVAILABLE, said)), "http://h:1")
    assert "http://h:1: this port does not speak HTTP/1.1" in str(error)


def test_a_proxy_of_the_environment_keeps_the_url_on_pyqwest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert not proxy_applies("http://10.0.0.1:8101")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert proxy_applies("https://edge.example.com:443")
    assert not proxy_applies("http://10.0.0.1:8101")
    monkeypatch.setenv("ALL_PROXY", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert proxy_applies("http://10.0.0.2:8101")
    assert not proxy_applies("http://10.0.0.1:8101")


@pytest.mark.parametrize("pool", [Http1Pool, Http1SyncPool])
def test_only_unary_methods_go_through_the_http1_pool(pool: Any) -> None:
    unary = ConnectUnary(pool("http://h:1", None, 1), _SERVICES["kv"])
    # Coroutines for the asyncio client, blocking calls for the blocking one.
    assert inspect.iscoroutinefunction(unary.method("Get")) == (pool is Http1Pool)
    for name in ("Watch", "Stream", "Nothing"):
        with pytest.raises(AttributeError, match=name):
            unary.method(name)
