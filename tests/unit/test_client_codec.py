"""The SDK's shared codec: argument conversion, request building, results, error mapping."""

from __future__ import annotations

import grpc
import pytest

from edgekv import errors
from edgekv.client import Delete, Entry, NodeStatus, Put, Version, WriteResult
from edgekv.client import _codec as codec
from edgekv.v1 import cluster_pb2, common_pb2, kv_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str | None = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize(
    ("given", "expected"),
    [(b"k", b"k"), ("k", b"k"), ("é", "é".encode()), (bytearray(b"ab"), b"ab"),
     (memoryview(b"cd"), b"cd"), (b"", b"")],
)  # fmt: skip
def test_to_bytes_accepts_bytes_and_utf8_str(given: object, expected: bytes) -> None:
    assert codec.to_bytes(given) == expected


@pytest.mark.parametrize("given", [42, None, 1.5, ["k"]])
def test_to_bytes_rejects_other_types_with_invalid_argument(given: object) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"value must be bytes or str, got") as info:
        codec.to_bytes(given, "value")
    assert isinstance(info.value, ValueError)


def test_put_request_omits_zero_ttl_and_keeps_value_bytes() -> None:
    req = codec.put_request(b"k", "v", 0)
    assert (req.key, req.value, req.ttl_ms) == (b"k", b"v", 0)
    assert codec.put_request(b"k", b"v", 1500).ttl_ms == 1500


@pytest.mark.parametrize(
    ("ttl_ms", "match"),
    [(-1, r"ttl_ms is -1; it must be 0\.\.18446744073709551615"), (1 << 64, "ttl_ms is"),
     ("10", "ttl_ms must be an integer, got str"), (1.5, "got float"), (True, "got bool")],
)  # fmt: skip
def test_put_request_bad_ttl_rejected(ttl_ms: object, match: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=match):
        codec.put_request(b"k", b"v", ttl_ms)  # type: ignore[arg-type]


def test_write_request_keeps_op_order_and_encodes_str() -> None:
    req = codec.write_request([Put("a", "1", ttl_ms=5), Delete(b"b"), Put(b"c", b"3")])
    assert [op.WhichOneof("op") for op in req.ops] == ["put", "delete", "put"]
    assert (req.ops[0].put.key, req.ops[0].put.value, req.ops[0].put.ttl_ms) == (b"a", b"1", 5)
    assert req.ops[1].delete.key == b"b"
    assert codec.first_key(req) == b"a"
    assert codec.first_key(codec.write_request([Delete("z")])) == b"z"
    assert codec.first_key(kv_pb2.WriteRequest()) is None


def test_write_request_rejects_foreign_ops_naming_the_index() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"ops\[1\] is tuple; expected edgekv.Put"):
        codec.write_request([Put("a", "1"), ("b", "2")])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidArgument, match=r"ops\[0\].ttl_ms is -3"):
        codec.write_request([Put("a", "1", ttl_ms=-3)])
    with pytest.raises(errors.InvalidArgument, match="not a single one"):
        codec.write_request(Put("a", "1"))  # type: ignore[arg-type]


def test_get_many_request_rejects_a_single_key() -> None:
    assert list(codec.get_many_request(["a", b"b", "a"]).keys) == [b"a", b"b", b"a"]
    for single in (b"ab", "ab"):
        with pytest.raises(errors.InvalidArgument, match="a list of keys"):
            codec.get_many_request(single)  # type: ignore[arg-type]


def test_scan_request_checks_page_size_and_limit() -> None:
    req = codec.scan_request("p/", b"", "p/z", 7, True)
    assert (req.prefix, req.start, req.end, req.limit, req.keys_only) == (
        b"p/",
        b"",
        b"p/z",
        7,
        True,
    )
    assert codec.scan_route_key(req) == b"p/"
    assert codec.scan_route_key(codec.scan_request(b"", b"s", b"", 1, False)) == b"s"
    assert codec.scan_route_key(codec.scan_request(b"", b"", b"", 1, False)) is None
    for bad in (0, -1, 1 << 32):
        with pytest.raises(errors.InvalidArgument, match="page_size is"):
            codec.scan_request(b"", b"", b"", bad, False)
    assert codec.check_limit(None) is None and codec.check_limit(0) == 0
    with pytest.raises(errors.InvalidArgument, match="limit is -1"):
        codec.check_limit(-1)


def _version(ts: int = 7, origin: str = "n1") -> common_pb2.Version:
    return common_pb2.Version(timestamp=ts, origin=origin)


def test_entry_from_get_found_and_missing() -> None:
    resp = kv_pb2.GetResponse(
        found=True, value=b"v", version=_version(), served_by="n2", expires_at_ms=99
    )
    entry = codec.entry_from_get(b"k", resp)
    assert entry == Entry(b"k", b"v", Version(7, "n1"), 99, "n2")
    assert entry.version.timestamp == 7 and entry.version.origin == "n1"
    assert codec.entry_from_get(b"k", kv_pb2.GetResponse(found=False, served_by="n2")) is None


def test_results_are_frozen_slotted_dataclasses() -> None:
    entry = Entry(b"k", b"v", Version(1, "n"))
    with pytest.raises(AttributeError):
        entry.value = b"x"  # type: ignore[misc]
    assert not hasattr(entry, "__dict__")
    assert hash(WriteResult(Version(1, "n"), "n")) == hash(WriteResult(Version(1, "n"), "n"))


def test_entries_from_batch_keep_request_order_with_none_for_missing() -> None:
    resp = kv_pb2.BatchGetResponse(
        served_by="n1",
        results=[
            kv_pb2.KeyResult(key=b"b", found=True, value=b"2", version=_version(2)),
            kv_pb2.KeyResult(key=b"x", found=False),
            kv_pb2.KeyResult(key=b"a", found=True, value=b"1", version=_version(1)),
        ],
    )
    got = codec.entries_from_batch(resp)
    assert [e.key if e else None for e in got] == [b"b", None, b"a"]
    assert got[0] is not None and got[0].served_by == "n1" and got[0].version == (2, "n1")


def test_write_result_and_scan_entries_and_status() -> None:
    assert codec.write_result(kv_pb2.PutResponse(version=_version(5), served_by="n")) == (
        WriteResult(Version(5, "n1"), "n")
    )
    page = kv_pb2.ScanResponse(
        items=[kv_pb2.KeyValue(key=b"a", value=b"1", version=_version(), expires_at_ms=3)],
        served_by="n9",
    )
    assert codec.scan_entries(page) == [Entry(b"a", b"1", Version(7, "n1"), 3, "n9")]
    status = codec.node_status(
        cluster_pb2.StatusResponse(node_id="n", region="r", cluster="c", key_count=4,
                                   read_path="cython", last_seq=9, hlc_timestamp=123)
    )  # fmt: skip
    assert isinstance(status, NodeStatus)
    assert (status.node_id, status.key_count, status.last_seq, status.hlc_timestamp) == (
        "n", 4, 9, 123,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (cls, code)
        for cls, code in errors.GRPC_CODE_BY_ERROR.items()
        if cls is not errors.ConfigError
    ],
)
def test_error_from_rpc_maps_every_code_back_to_its_class(
    cls: type[errors.EdgeKVError], code: grpc.StatusCode
) -> None:
    err = codec.error_from_rpc(FakeRpcError(code, "the message"), "h:1")
    assert type(err) is cls and isinstance(err, errors.EdgeKVError)
    assert str(err).endswith("the message")


def test_error_from_rpc_invalid_argument_is_a_value_error_with_the_node_message() -> None:
    msg = "value is 1048577 bytes; the limit is 1048576 (max_value_bytes)"
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, msg), "h:1")
    assert isinstance(err, errors.InvalidArgument) and isinstance(err, ValueError)
    assert str(err) == msg  # no endpoint prefix: the node answered


def test_error_from_rpc_names_the_endpoint_when_unreachable() -> None:
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connect failed"), "h:1")
    assert isinstance(err, errors.Unavailable) and str(err) == "h:1: connect failed"
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, None), "h:1")
    assert isinstance(err, errors.DeadlineExceeded) and str(err) == "h:1: DEADLINE_EXCEEDED"


def test_error_from_rpc_unknown_code_is_the_base_class() -> None:
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.DATA_LOSS, "lost"))
    assert type(err) is errors.EdgeKVError and str(err) == "lost"
    # An RpcError without a status (not a call) still becomes an EdgeKVError.
    assert type(codec.error_from_rpc(grpc.RpcError("odd"), "h:1")) is errors.EdgeKVError


# -- transport errors a user can cause: the cause and the fix, for SDK and CLI alike --


def test_error_from_rpc_peer_port_says_use_the_listen_address() -> None:
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"),
                               "h:7201")  # fmt: skip
    assert type(err) is errors.Unimplemented
    assert str(err) == (
        "h:7201: this endpoint does not serve the edgekv client API; it is probably a node's "
        "peer port (peer_listen): use the node's listen address; the server said: "
        "Method not found!"
    )


@pytest.mark.parametrize(
    ("details", "names"),
    [("SERVER: Received message larger than max (5000010 vs. 4194304)",
      ("the request is 5000010 bytes", "up to 4194304 bytes (limits.max_message_bytes)",
       "limits.max_value_bytes")),
     ("Sent message larger than max (70000000 vs. 67108864)",
      ("the request is 70000000 bytes", "at most 67108864", "grpc.max_send_message_length",
       "limits.max_value_bytes")),
     ("Received message larger than max (70000000 vs. 67108864)",
      ("the response is 70000000 bytes", "at most 67108864",
       "grpc.max_receive_message_length"))],
)  # fmt: skip
def test_error_from_rpc_oversized_message_names_size_limit_and_setting(
    details: str, names: tuple[str, ...]
) -> None:
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details), "h:1")
    # The same mistake as a value over max_value_bytes, by a wider margin: caught either way.
    assert isinstance(err, errors.MessageTooLarge)
    assert isinstance(err, errors.InvalidArgument) and isinstance(err, errors.ResourceExhausted)
    for name in names:
        assert name in str(err)
    assert "larger than max" not in str(err)


def test_error_from_rpc_other_resource_exhausted_keeps_the_node_message() -> None:
    msg = "127.0.0.1 has 1024 calls in flight; the limit is 1024 (max_inflight_per_client)"
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, msg), "h:1")
    assert type(err) is errors.ResourceExhausted and str(err) == msg


def test_error_from_rpc_tls_client_to_plaintext_node_says_drop_the_ca() -> None:
    details = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls "
               "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
               "routines:OPENSSL_internal:WRONG_VERSION_NUMBER")  # fmt: skip
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "h:1", tls=True)
    assert type(err) is errors.Unavailable
    assert str(err).startswith("h:1: TLS handshake failed: the node does not use TLS (plaintext)")
    assert "drop --ca-file" in str(err) and "security.tls" in str(err)


def test_error_from_rpc_tls_with_another_ca_says_use_the_clusters_ca() -> None:
    details = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
               "Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL "
               "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED")  # fmt: skip
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "h:1", tls=True)
    assert type(err) is errors.Unavailable
    assert "not signed by the given CA" in str(err) and "--ca-file" in str(err)


def test_error_from_rpc_plaintext_client_to_tls_node_says_give_the_ca() -> None:
    details = ("failed to connect to all addresses; last error: UNAVAILABLE: "
               "ipv4:127.0.0.1:1: Socket closed")  # fmt: skip
    plain = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "h:1",
                                 tls=False)  # fmt: skip
    assert type(plain) is errors.Unavailable and str(plain).startswith("h:1: the node closed")
    assert "if the node uses TLS (security.tls)" in str(plain) and "--ca-file" in str(plain)
    # With TLS on already, a closed socket says nothing about TLS: the plain message.
    secure = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "h:1",
                                  tls=True)  # fmt: skip
    assert str(secure) == f"h:1: {details}"


@pytest.mark.parametrize(
    ("details", "fix"),
    [('missing "authorization: Bearer <token>" metadata; this node requires a token',
      "no valid token: pass one with --token or $EDGEKV_TOKEN (token= in the SDK)"),
     ("the bearer token is not valid for this cluster",
      "the token was refused: check the token given with --token, $EDGEKV_TOKEN or token= "
      "(its SHA-256 must be listed in the cluster file's security.auth.tokens)")],
)  # fmt: skip
def test_error_from_rpc_missing_or_unknown_token_names_the_fix(details: str, fix: str) -> None:
    err = codec.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, details), "h:1")
    assert type(err) is errors.Unauthenticated
    assert str(err) == f"{fix}; the node said: {details}"


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:7101", "localhost:1", "[::1]:7101", "edge.example.com:65535", "unix:/tmp/s",
     "dns:///h:1", "http://127.0.0.1:8101", "https://edge.example.com:443/"],
)  # fmt: skip
def test_check_endpoint_accepts_host_port_and_grpc_targets(endpoint: str) -> None:
    assert codec.check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [("ftp://127.0.0.1:7101", "(gRPC) or http(s)://HOST:PORT (the HTTP door), not ftp://"),
     ("grpc://h:1/", "not grpc://"),
     ("http://h:1/v1/kv", "has a path; give the HTTP door as http://HOST:PORT"),
     ("http://h", "the port is missing; give http://HOST:PORT (e.g. http://127.0.0.1:8101)"),
     ("https://h:0", "the port '0' is not a number 1..65535; give https://HOST:PORT"),
     ("127.0.0.1", "the port is missing; give HOST:PORT (e.g. 127.0.0.1:7101)"),
     (":7101", "the port is missing"),
     ("h:0", "the port '0' is not a number 1..65535"),
     ("h:99999", "the port '99999' is not a number 1..65535"),
     ("h:abc", "the port 'abc' is not a number 1..65535"),
     ("", "endpoint must be HOST:PORT")],
)  # fmt: skip
def test_check_endpoint_rejects_bad_syntax_naming_the_fix(endpoint: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="HOST:PORT") as info:
        codec.check_endpoint(endpoint)
    assert message in str(info.value)
