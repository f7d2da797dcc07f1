"""KV.Stream on a real node, through a raw gRPC stub: the wire contract without the SDK.

Each operation answers as its unary method does (same messages, same codes and
messages); the stream's own rules: auth once, its limits, its refusals of a
broken client, and backpressure on a client that stops reading.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv import AsyncClient, Client, RetryPolicy, errors
from edgekv.client._stream_sync import SILENCE_S
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import NodeProcess, start_node, write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.server.auth import hash_token
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

Op = kv_pb2.StreamRequest


def exchange(stub: kv_pb2_grpc.KVStub, requests: list[Op], **kwargs: Any) -> dict[int, Any]:
    """Send ``requests`` on one stream, half-close, and return every answer by id."""
    return {answer.id: answer for answer in stub.Stream(iter(requests), timeout=30, **kwargs)}


@pytest.fixture
def stub(node: NodeProcess) -> Iterator[kv_pb2_grpc.KVStub]:
    with grpc.insecure_channel(node.endpoint) as channel:
        yield kv_pb2_grpc.KVStub(channel)


def test_every_operation_answers_as_its_unary_method(stub: kv_pb2_grpc.KVStub) -> None:
    put = kv_pb2.PutRequest(key=b"s/1", value=b"one", ttl_ms=60_000)
    answers = exchange(stub, [Op(id=1, put=put)])
    assert answers[1].WhichOneof("result") == "put"
    written = answers[1].put
    answers = exchange(stub, [
        Op(id=10, get=kv_pb2.GetRequest(key=b"s/1")),
        Op(id=11, batch_get=kv_pb2.BatchGetRequest(keys=[b"s/1", b"s/none"])),
        Op(id=12, write=kv_pb2.WriteRequest(ops=[
            kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"s/2", value=b"two")),
            kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=b"s/3")),
        ])),
        Op(id=13, delete=kv_pb2.DeleteRequest(key=b"s/4")),
    ])  # fmt: skip
    assert answers[10].get == stub.Get(kv_pb2.GetRequest(key=b"s/1"), timeout=5)
    assert answers[10].get.version == written.version and answers[10].get.expires_at_ms > 0
    assert [r.found for r in answers[11].batch_get.results] == [True, False]
    assert answers[12].write.served_by == "node-1" and answers[13].delete.version.timestamp
    assert stub.Get(kv_pb2.GetRequest(key=b"s/2"), timeout=5).value == b"two"


@pytest.mark.parametrize(
    ("op", "unary"),
    [
        (Op(get=kv_pb2.GetRequest(key=b"")), ("Get", kv_pb2.GetRequest(key=b""))),
        (
            Op(put=kv_pb2.PutRequest(key=b"k", value=b"x" * (1024 * 1024 + 1))),
            ("Put", kv_pb2.PutRequest(key=b"k", value=b"x" * (1024 * 1024 + 1))),
        ),
        (
            Op(batch_get=kv_pb2.BatchGetRequest(keys=[b"k"] * 1001)),
            ("BatchGet", kv_pb2.BatchGetRequest(keys=[b"k"] * 1001)),
        ),
        (Op(write=kv_pb2.WriteRequest()), ("Write", kv_pb2.WriteRequest())),
    ],
    ids=["empty-key", "big-value", "batch-over-limit", "empty-write"],
)
def test_an_error_fails_its_operation_with_the_unary_status(
    stub: kv_pb2_grpc.KVStub, op: Op, unary: tuple[str, Any]
) -> None:
    op.id = 7
    answers = exchange(stub, [op, Op(id=8, get=kv_pb2.GetRequest(key=b"fine"))])
    error = answers[7].error
    with pytest.raises(grpc.RpcError) as excinfo:
        getattr(stub, unary[0])(unary[1], timeout=5)
    assert error.code == excinfo.value.code().value[0]
    assert error.message == excinfo.value.details() and error.message
    assert answers[8].WhichOneof("result") == "get"  # the stream went on


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([Op(id=3)], "stream request id 3 carries no operation"),
        (
            [Op(id=4, get=kv_pb2.GetRequest(key=b"k")), Op(id=4, get=kv_pb2.GetRequest(key=b"k"))],
            None,  # 4 may have been answered before the second 4 came: then both are fine
        ),
    ],
    ids=["no-operation", "same-id"],
)
def test_a_broken_client_ends_the_stream_invalid_argument(
    stub: kv_pb2_grpc.KVStub, requests: list[Op], message: str | None
) -> None:
    if message is None:
        try:
            answers = exchange(stub, requests)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "is already in flight on this stream" in (exc.details() or "")
        else:
            assert list(answers) == [4]
        return
    with pytest.raises(grpc.RpcError) as excinfo:
        exchange(stub, requests)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (excinfo.value.details() or "")


def test_undecodable_request_ends_the_stream_invalid_argument(node: NodeProcess) -> None:
    with grpc.insecure_channel(node.endpoint) as channel:
        raw = channel.stream_stream("/edgekv.v1.KV/Stream")
        with pytest.raises(grpc.RpcError) as excinfo:
            list(raw(iter([b"\xff\xff\xff"]), timeout=10))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (excinfo.value.details() or "")


def test_stream_limits_operations_in_flight_and_streams_per_client(tmp_path: Path) -> None:
    limits = {"max_stream_inflight": 2, "max_streams_per_client": 2}
    node = start_node(write_cluster_file(tmp_path, extra={"limits": limits}), "node-1")
    big = b"b" * (1024 * 1024)
    try:
        with grpc.insecure_channel(node.endpoint) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            stub.Put(kv_pb2.PutRequest(key=b"big", value=big), timeout=10)
            # 1 MiB answers fill the flow-control window (kept small: no BDP probing)
            # and the socket buffers: the client reads nothing until all 24 are sent,
            # so a later one finds two answers pending.
            ops = [Op(id=i, get=kv_pb2.GetRequest(key=b"big")) for i in range(1, 25)]
            sent = threading.Event()

            def send_all() -> Iterator[Op]:
                yield from ops
                sent.set()

            with grpc.insecure_channel(node.endpoint, [("grpc.http2.bdp_probe", 0)]) as slow:
                responses = kv_pb2_grpc.KVStub(slow).Stream(send_all(), timeout=30)
                assert sent.wait(20)
                time.sleep(1.0)  # the node reads them all, or stops reading: refusals
                answers = {answer.id: answer for answer in responses}
            refused = [a.error for a in answers.values() if a.WhichOneof("result") == "error"]
            assert refused and len(answers) == 24
            assert all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] for e in refused)
            assert refused[0].message == (
                "this stream has 2 operations in flight; the limit is 2 (max_stream_inflight)"
            )
            assert all(a.get.value == big for a in answers.values() if a.HasField("get"))
            hold = threading.Event()

            def idle() -> Iterator[Op]:
                hold.wait(30)
                yield from ()

            first, second = stub.Stream(idle()), stub.Stream(idle())
            third = stub.Stream(idle())
            with pytest.raises(grpc.RpcError) as excinfo:
                next(third)
            assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (excinfo.value.details() or "").endswith(
                "has 2 bidi streams (KV.Stream) open; the limit is 2 (max_streams_per_client)"
            )
            hold.set()
            assert list(first) == [] and list(second) == []
    finally:
        node.stop()


def test_clients_over_the_stream_limit_are_served_unary(tmp_path: Path) -> None:
    # More SDK clients on one host than max_streams_per_client: the node refuses the
    # extra streams, and those clients' calls (writes included) go unary, not fail.
    limits = {"max_streams_per_client": 1}
    node = start_node(write_cluster_file(tmp_path, extra={"limits": limits}), "node-1")
    try:
        with (
            Client(node.endpoint, discover=False) as first,
            Client(node.endpoint, discover=False) as second,
        ):
            assert first.put("s/1", "a").served_by == "node-1"  # holds the one stream
            assert second.put("s/2", "b").served_by == "node-1"  # refused: unary
            assert second.get("s/1").value == b"a"  # type: ignore[union-attr]
            assert first.get("s/2").value == b"b"  # type: ignore[union-attr]
            stream = second._streams[node.endpoint]
            assert stream.unsupported and stream._unary_until > 0

            async def third() -> bytes:
                async with AsyncClient(node.endpoint, discover=False) as kv:
                    await kv.put("s/3", "c")  # refused too: unary, on asyncio
                    return (await kv.get("s/3")).value  # type: ignore[union-attr]

            assert asyncio.run(third()) == b"c"
    finally:
        node.stop()


def test_a_client_that_stops_reading_stops_the_stream(tmp_path: Path) -> None:
    """The node stops reading requests once it cannot write answers: the client's
    sends block (HTTP/2 flow control) instead of the node's memory growing. Its
    unanswered operations count as the client's calls in flight."""
    limits = {"max_stream_inflight": 256, "max_inflight_per_client": 300}
    node = start_node(write_cluster_file(tmp_path, extra={"limits": limits}), "node-1")
    try:
        _stalled_stream_blocks_its_client(node)
    finally:
        node.stop()


def _stalled_stream_blocks_its_client(node: NodeProcess) -> None:
    offered = 20_000
    pulled = itertools.count()
    key = b"k" * 1000  # 1 KB per request, 20 MB offered

    def requests() -> Iterator[Op]:
        for i in range(offered):
            next(pulled)
            yield Op(id=i, get=kv_pb2.GetRequest(key=key))

    with grpc.insecure_channel(node.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        stub.Put(kv_pb2.PutRequest(key=key, value=b"v" * 60_000), timeout=10)
        call = stub.Stream(requests())  # never read
        seen: list[int] = []

        def settled() -> bool:
            seen.append(next(pulled))
            return len(seen) > 3 and seen[-1] - seen[-4] <= 3  # no progress for 3 polls

        try:
            wait_until(settled, timeout_s=60, interval_s=0.5, what="the sends to stall")
            assert seen[-1] < offered / 2, seen
            # The node still serves the client's other calls, within its budget: the
            # 256 operations the stream holds count against max_inflight_per_client.
            assert stub.Get(kv_pb2.GetRequest(key=key), timeout=10).found
            second = stub.Stream(requests())  # another stalled stream: over the budget
            try:
                wait_until(
                    lambda: _refused(stub, key), timeout_s=60, what="the budget to be used up"
                )
            finally:
                second.cancel()
        finally:
            call.cancel()
        # Both streams gone: their operations no longer count.
        wait_until(lambda: not _refused(stub, key), timeout_s=30, what="the budget back")


def _refused(stub: kv_pb2_grpc.KVStub, key: bytes) -> bool:
    try:
        stub.Get(kv_pb2.GetRequest(key=key), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        assert "the limit is 300 (max_inflight_per_client)" in (exc.details() or "")
        return True
    return False


TOKENS = {"reader": "r-secret-1234", "writer": "w-secret-5678"}
SCOPES = {"reader": "read", "writer": "write"}


def test_token_checked_once_per_stream_with_unary_rules(tmp_path: Path) -> None:
    auth = {
        "mode": "tokens",
        "tokens": [
            {
                "name": n,
                "sha256": hash_token(t).hex(),
                "scope": "read" if n == "reader" else "write",
            }
            for n, t in TOKENS.items()
        ],
    }
    path = write_cluster_file(tmp_path, extra={"security": {"auth": auth}}, metrics=True)
    with LocalCluster(path) as cluster:
        cluster.start()
        endpoint = cluster.endpoint("node-1")
        with grpc.insecure_channel(endpoint) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            get = Op(id=1, get=kv_pb2.GetRequest(key=b"a"))
            with pytest.raises(grpc.RpcError) as excinfo:
                exchange(stub, [get])
            assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reader = (("authorization", f"Bearer {TOKENS['reader']}"),)
            put = Op(id=2, put=kv_pb2.PutRequest(key=b"a", value=b"v"))
            answers = exchange(stub, [get, put], metadata=reader)
            assert answers[1].WhichOneof("result") == "get"
            assert answers[2].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            with pytest.raises(grpc.RpcError) as unary:
                stub.Put(put.put, timeout=5, metadata=reader)
            assert answers[2].error.message == unary.value.details()
        with Client(endpoint, discover=False, token=TOKENS["writer"], transport="stream") as c:
            c.put("a", "v")
            assert c.get("a").value == b"v"  # type: ignore[union-attr]
        m = scrape_metrics(cluster.nodes["node-1"].info["metrics_port"])
        counted = {
            (labels["method"], labels["code"]): v
            for labels, v in m["edgekv_requests_total"]
            if labels["service"] == "KV"
        }
        # Stream operations are counted as their unary method (both transports here).
        assert counted[("Get", "OK")] >= 2 and counted[("Put", "PERMISSION_DENIED")] >= 2
        assert counted[("Put", "OK")] >= 1


def test_streamed_sdk_reconnects_after_the_node_restarts(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path)
    node = start_node(path, "node-1")
    try:
        with Client(node.endpoint, discover=False, transport="stream", timeout_s=5) as c:
            c.put("r", "1")
            node.stop()
            node = start_node(path, "node-1")
            deadline = time.monotonic() + 30
            while True:  # the first calls may meet the broken stream; reads are retried
                try:
                    entry = c.get("r")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert entry is not None and entry.value == b"1"
            assert c.put("r", "2").served_by == "node-1"
            # A graceful restart ends the idle stream; the next operation, a write,
            # goes on a new stream (one put on the ended stream would never be sent).
            node.stop()
            node = start_node(path, "node-1")
            assert c.put("r", "3").served_by == "node-1"
            assert c.get("r").value == b"3"  # type: ignore[union-attr]
    finally:
        node.stop()


def test_streamed_client_waits_no_longer_than_its_deadline_on_a_hung_node(
    node: NodeProcess,
) -> None:
    """A node that stops answering (SIGSTOP: its connection stays open, nothing comes
    back). The blocking client's callers read the stream themselves, and a reader
    cannot leave grpc's next(): yet a lone caller returns by its deadline, and of
    several concurrent callers none waits more than SILENCE_S past its own."""
    slack_s = 2.0  # a loaded machine; the failure this catches is waiting for ever
    once = RetryPolicy(max_attempts=1)
    with Client(node.endpoint, discover=False, transport="stream", retry=once) as c:
        c.put("hung/k", "1")
        os.kill(node.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded):
                c.get("hung/k", timeout_s=0.5)
            assert time.monotonic() - started < 0.5 + slack_s
            outcomes: list[tuple[str, float]] = []
            go = threading.Barrier(4)

            def one() -> None:
                go.wait(10)
                started = time.monotonic()
                try:
                    c.get("hung/k", timeout_s=1.0)
                except errors.EdgeKVError as exc:
                    outcomes.append((type(exc).__name__, time.monotonic() - started))

            callers = [threading.Thread(target=one) for _ in range(4)]
            for t in callers:
                t.start()
            for t in callers:
                t.join(30)
            assert len(outcomes) == 4, outcomes
            for name, took_s in outcomes:
                assert name in ("DeadlineExceeded", "Unavailable"), outcomes
                assert took_s < 1.0 + SILENCE_S + slack_s, outcomes
        finally:
            os.kill(node.pid, signal.SIGCONT)
        entry = wait_until(lambda: c.get("hung/k", timeout_s=5), timeout_s=30, what="the node back")
        assert entry is not None and entry.value == b"1"
