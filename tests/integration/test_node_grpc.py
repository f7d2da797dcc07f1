"""The wire contract of one node, driven through raw gRPC stubs against `edgekv serve`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgekv.local.launcher import NodeProcess, start_node
from edgekv.local.wait import wait_until
from edgekv.v1 import cluster_pb2, kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def code_of(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()  # type: ignore[attr-defined, no-any-return]


def details_of(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return excinfo.value.details()  # type: ignore[attr-defined, no-any-return]


def test_put_then_get_returns_value_and_version(kv_stub: kv_pb2_grpc.KVStub) -> None:
    put = kv_stub.Put(kv_pb2.PutRequest(key=b"k1", value=b"v1"))
    assert put.served_by == "node-1"
    assert put.version.origin == "node-1" and put.version.timestamp > 0
    got = kv_stub.Get(kv_pb2.GetRequest(key=b"k1"))
    assert got.found and got.value == b"v1"
    assert got.version == put.version
    assert got.served_by == "node-1"
    assert got.expires_at_ms == 0


def test_get_missing_key_not_found_flag(kv_stub: kv_pb2_grpc.KVStub) -> None:
    got = kv_stub.Get(kv_pb2.GetRequest(key=b"nope"))
    assert not got.found and got.value == b"" and not got.HasField("version")
    assert got.served_by == "node-1"


def test_batch_get_keeps_request_order_with_duplicates(kv_stub: kv_pb2_grpc.KVStub) -> None:
    kv_stub.Put(kv_pb2.PutRequest(key=b"a", value=b"1"))
    kv_stub.Put(kv_pb2.PutRequest(key=b"c", value=b"3"))
    resp = kv_stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"c", b"b", b"a", b"c"]))
    assert [(r.key, r.found, r.value) for r in resp.results] == [
        (b"c", True, b"3"), (b"b", False, b""), (b"a", True, b"1"), (b"c", True, b"3"),
    ]  # fmt: skip


def test_delete_hides_value_and_versions_increase(kv_stub: kv_pb2_grpc.KVStub) -> None:
    put = kv_stub.Put(kv_pb2.PutRequest(key=b"gone", value=b"x"))
    deleted = kv_stub.Delete(kv_pb2.DeleteRequest(key=b"gone"))
    assert deleted.version.timestamp > put.version.timestamp
    assert not kv_stub.Get(kv_pb2.GetRequest(key=b"gone")).found
    # Deleting a missing key is not an error: the tombstone still replicates.
    kv_stub.Delete(kv_pb2.DeleteRequest(key=b"never-was"))


def test_put_with_ttl_expires(kv_stub: kv_pb2_grpc.KVStub) -> None:
    kv_stub.Put(kv_pb2.PutRequest(key=b"ttl", value=b"x", ttl_ms=300))
    got = kv_stub.Get(kv_pb2.GetRequest(key=b"ttl"))
    assert got.found and got.expires_at_ms > 0
    wait_until(
        lambda: not kv_stub.Get(kv_pb2.GetRequest(key=b"ttl")).found,
        timeout_s=5,
        what="the TTL'd key to expire",
    )


def test_write_batch_is_atomic_with_one_version(kv_stub: kv_pb2_grpc.KVStub) -> None:
    kv_stub.Put(kv_pb2.PutRequest(key=b"w/old", value=b"x"))
    resp = kv_stub.Write(
        kv_pb2.WriteRequest(
            ops=[
                kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"w/a", value=b"1")),
                kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"w/b", value=b"2")),
                kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=b"w/old")),
            ]
        )
    )
    a = kv_stub.Get(kv_pb2.GetRequest(key=b"w/a"))
    b = kv_stub.Get(kv_pb2.GetRequest(key=b"w/b"))
    assert a.version == b.version == resp.version
    assert not kv_stub.Get(kv_pb2.GetRequest(key=b"w/old")).found


def test_write_batch_with_bad_op_writes_nothing(kv_stub: kv_pb2_grpc.KVStub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Write(
            kv_pb2.WriteRequest(
                ops=[
                    kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"atom/1", value=b"1")),
                    kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"", value=b"2")),
                ]
            )
        )
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert not kv_stub.Get(kv_pb2.GetRequest(key=b"atom/1")).found


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([], "batch is empty"),
        ([kv_pb2.WriteOp()], "ops[0] sets neither put nor delete"),
        (
            [
                kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"dup", value=b"1")),
                kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=b"dup")),
            ],
            "appears twice",
        ),
    ],
)
def test_write_invalid_batch_rejected(
    kv_stub: kv_pb2_grpc.KVStub, ops: list[kv_pb2.WriteOp], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Write(kv_pb2.WriteRequest(ops=ops))
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details_of(excinfo)


def test_scan_prefix_pages_through_everything(kv_stub: kv_pb2_grpc.KVStub) -> None:
    keys = [b"s/%03d" % i for i in range(25)]
    for key in keys:
        kv_stub.Put(kv_pb2.PutRequest(key=key, value=key))
    kv_stub.Put(kv_pb2.PutRequest(key=b"t/outside", value=b"x"))
    kv_stub.Delete(kv_pb2.DeleteRequest(key=b"s/010"))
    seen: list[bytes] = []
    token = b""
    pages = 0
    while True:
        resp = kv_stub.Scan(kv_pb2.ScanRequest(prefix=b"s/", limit=10, page_token=token))
        seen.extend(item.key for item in resp.items)
        assert all(item.value == item.key for item in resp.items)
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert seen == [k for k in keys if k != b"s/010"]
    assert pages == 3


def test_scan_range_and_keys_only(kv_stub: kv_pb2_grpc.KVStub) -> None:
    for key in (b"r/a", b"r/b", b"r/c", b"r/d"):
        kv_stub.Put(kv_pb2.PutRequest(key=key, value=b"v"))
    resp = kv_stub.Scan(kv_pb2.ScanRequest(start=b"r/b", end=b"r/d", keys_only=True))
    assert [(i.key, i.value) for i in resp.items] == [(b"r/b", b""), (b"r/c", b"")]
    assert resp.next_page_token == b""


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (kv_pb2.ScanRequest(start=b"b", end=b"a"), "scan range is empty"),
        (kv_pb2.ScanRequest(prefix=b"p/", start=b"q"), "scan range is empty"),
        (kv_pb2.ScanRequest(prefix=b"p/", page_token=b"zzz"), "page_token"),
        (kv_pb2.ScanRequest(limit=1_000_000), "max_scan_limit"),
    ],
)
def test_scan_bad_request_invalid_argument(
    kv_stub: kv_pb2_grpc.KVStub, request_: kv_pb2.ScanRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Scan(request_)
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details_of(excinfo)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (kv_pb2.PutRequest(key=b"", value=b"x"), "key is empty"),
        (kv_pb2.PutRequest(key=b"k" * 1025, value=b"x"), "key is 1025 bytes; the limit is 1024"),
        (
            kv_pb2.PutRequest(key=b"big", value=b"x" * (MiB + 1)),
            "value is 1048577 bytes; the limit is 1048576 (max_value_bytes)",
        ),
        (kv_pb2.PutRequest(key=b"t", value=b"x", ttl_ms=2**63), "ttl_ms"),
    ],
)
def test_put_invalid_input_rejected_and_node_stays_up(
    kv_stub: kv_pb2_grpc.KVStub, request_: kv_pb2.PutRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Put(request_)
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details_of(excinfo)
    if 0 < len(request_.key) <= 1024:
        assert not kv_stub.Get(kv_pb2.GetRequest(key=request_.key)).found
    kv_stub.Put(kv_pb2.PutRequest(key=b"after", value=b"ok"))
    assert kv_stub.Get(kv_pb2.GetRequest(key=b"after")).value == b"ok"


def test_get_and_batch_get_invalid_keys_rejected(kv_stub: kv_pb2_grpc.KVStub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Get(kv_pb2.GetRequest(key=b""))
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"ok", b"x" * 2000]))
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "2000 bytes" in details_of(excinfo)
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"k%d" % i for i in range(1001)]))
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_batch_ops" in details_of(excinfo)


def test_oversized_message_resource_exhausted(kv_stub: kv_pb2_grpc.KVStub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        kv_stub.Put(kv_pb2.PutRequest(key=b"huge", value=b"x" * (8 * MiB)))
    assert code_of(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert kv_stub.Put(kv_pb2.PutRequest(key=b"after", value=b"ok")).served_by == "node-1"


def test_malformed_protobuf_fails_call_not_node(channel: grpc.Channel) -> None:
    raw_put = channel.unary_unary("/edgekv.v1.KV/Put")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as excinfo:
        raw_put(b"\xff\xff\xff\xff\x0f garbage")
    assert code_of(excinfo) != grpc.StatusCode.OK
    unknown = channel.unary_unary("/edgekv.v1.KV/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as excinfo:
        unknown(b"")
    assert code_of(excinfo) == grpc.StatusCode.UNIMPLEMENTED
    stub = kv_pb2_grpc.KVStub(channel)
    assert stub.Put(kv_pb2.PutRequest(key=b"still", value=b"up")).served_by == "node-1"


def test_status_reports_node_and_compiled_read_path(
    cluster_stub: object, kv_stub: kv_pb2_grpc.KVStub
) -> None:
    kv_stub.Put(kv_pb2.PutRequest(key=b"x", value=b"y"))
    status = cluster_stub.Status(cluster_pb2.StatusRequest())  # type: ignore[attr-defined]
    assert status.node_id == "node-1"
    assert status.region == "local"
    assert status.cluster == "test"
    assert status.read_path == "cython"
    assert status.last_seq == 1
    assert status.uptime_s > 0


def test_health_and_reflection_served(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "edgekv.v1.KV"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"edgekv.v1.KV", "edgekv.v1.Cluster", "grpc.health.v1.Health"} <= names


def test_restart_keeps_data(cluster_file: Path) -> None:
    node = start_node(cluster_file, "node-1")
    try:
        with grpc.insecure_channel(node.endpoint) as ch:
            stub = kv_pb2_grpc.KVStub(ch)
            put = stub.Put(kv_pb2.PutRequest(key=b"durable", value=b"yes"))
    finally:
        assert node.stop() == 0
    node = start_node(cluster_file, "node-1")
    try:
        with grpc.insecure_channel(node.endpoint) as ch:
            stub = kv_pb2_grpc.KVStub(ch)
            got = stub.Get(kv_pb2.GetRequest(key=b"durable"))
            assert got.value == b"yes" and got.version == put.version
            later = stub.Put(kv_pb2.PutRequest(key=b"durable", value=b"again"))
            assert later.version.timestamp > put.version.timestamp
    finally:
        node.stop()


def _write_load(endpoint: str, acked: list[bytes], stop: threading.Event, tag: str) -> None:
    """Put keys until told to stop or the node goes away; record every acknowledged key."""
    with grpc.insecure_channel(endpoint) as ch:
        stub = kv_pb2_grpc.KVStub(ch)
        i = 0
        while not stop.is_set():
            key = f"load/{tag}/{i:06d}".encode()
            try:
                stub.Put(kv_pb2.PutRequest(key=key, value=key), timeout=5)
            except grpc.RpcError:
                return
            acked.append(key)
            i += 1


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_acknowledged_writes_survive_shutdown_under_load(cluster_file: Path, how: str) -> None:
    node = start_node(cluster_file, "node-1")
    acked: list[list[bytes]] = [[] for _ in range(4)]
    stop = threading.Event()
    workers = [
        threading.Thread(target=_write_load, args=(node.endpoint, acked[i], stop, str(i)))
        for i in range(4)
    ]
    try:
        for w in workers:
            w.start()
        wait_until(lambda: sum(map(len, acked)) >= 400, timeout_s=30, what="400 acked writes")
        if how == "sigterm":
            assert node.stop() == 0  # drains in-flight calls and exits cleanly
        else:
            node.kill()  # a process crash: the WAL is in the OS page cache
    finally:
        stop.set()
        for w in workers:
            w.join(10)
        node.stop()
    all_acked = [k for keys in acked for k in keys]
    node = start_node(cluster_file, "node-1")
    try:
        with grpc.insecure_channel(node.endpoint) as ch:
            stub = kv_pb2_grpc.KVStub(ch)
            missing = []
            for start in range(0, len(all_acked), 500):
                chunk = all_acked[start : start + 500]
                resp = stub.BatchGet(kv_pb2.BatchGetRequest(keys=chunk))
                missing += [r.key for r in resp.results if not r.found or r.value != r.key]
            assert missing == [], f"{len(missing)} of {len(all_acked)} acknowledged writes lost"
    finally:
        node.stop()


def test_second_node_on_same_data_dir_refused(node: NodeProcess, cluster_file: Path) -> None:
    from edgekv.local.launcher import LaunchError

    started = time.monotonic()
    with pytest.raises(LaunchError, match="exited with code 1"):
        start_node(cluster_file, "node-1", log_dir=cluster_file.parent / "second")
    assert time.monotonic() - started < 20
    assert node.alive()
