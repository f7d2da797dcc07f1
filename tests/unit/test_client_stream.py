"""The SDK's streamed transport (client/_stream.py) against a scripted KV.Stream.

What the shared SDK tests (parametrized over transports) cannot show: which
StreamRequests go out (ids, timeout_ms, cancels), and what a caller sees when
its operation is cancelled, runs out of time, fails with metadata, or when the
node has no KV.Stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import edgekv
from edgekv import AsyncClient, Client, errors
from edgekv.client import _stream
from edgekv.client._stream import StreamRpcError, check_transport, timeout_ms_of
from edgekv.v1 import common_pb2, kv_pb2

EP = "127.0.0.1:1"
FOUND = kv_pb2.GetResponse(
    found=True, value=b"v", version=common_pb2.Version(timestamp=10, origin="n1"), served_by="n1"
)


class ScriptedStream:
    """A grpc.aio StreamStreamCall: records what is written; answers only what the test says."""

    def __init__(self, ended: StreamRpcError | None = None) -> None:
        self.written: list[kv_pb2.StreamRequest] = []
        self.answers: asyncio.Queue[Any] = asyncio.Queue()
        self.wrote = asyncio.Event()
        self.write_gate: asyncio.Event | None = None  # a write waits for it (in flight)
        self.write_error: BaseException | None = None  # a write fails with it: the call ended
        if ended is not None:  # the node ends it at once: no write goes through
            self.write_error = ended
            self.answers.put_nowait(ended)

    async def write(self, request: kv_pb2.StreamRequest) -> None:
        if self.write_gate is not None:
            await self.write_gate.wait()
        if self.write_error is not None:
            raise self.write_error
        self.written.append(request)
        self.wrote.set()

    async def read(self) -> Any:
        answer = await self.answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cancel(self) -> bool:
        self.answers.put_nowait(StreamRpcError(grpc.StatusCode.CANCELLED, "cancelled"))
        return True

    async def next_request(self) -> kv_pb2.StreamRequest:
        while not self.written:
            self.wrote.clear()
            await self.wrote.wait()
        return self.written.pop(0)


class Stub:
    """A KV stub whose Stream calls are ScriptedStreams; unary Get answers FOUND."""

    def __init__(self, ending: StreamRpcError | None = None) -> None:
        self.streams: list[ScriptedStream] = []
        self.unary_gets = 0
        self.ending = ending  # every stream ends at once with it

    def Stream(self, metadata: Any = None) -> ScriptedStream:
        self.streams.append(ScriptedStream(self.ending))
        return self.streams[-1]

    async def Get(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self.unary_gets += 1
        return FOUND


def streamed_client(stub: Stub, **kwargs: Any) -> AsyncClient:
    client = AsyncClient(EP, discover=False, transport="stream", **kwargs)
    client._kv_stubs[EP] = stub  # type: ignore[assignment]
    return client


def test_transport_names_are_checked_and_defaults_measured() -> None:
    assert check_transport("stream") == "stream"
    with pytest.raises(ValueError, match="transport is 'udp'; it must be one of unary, stream"):
        check_transport("udp")
    with pytest.raises(ValueError, match="transport is 'grpc'"):
        Client(EP, discover=False, transport="grpc")
    assert timeout_ms_of(None) == 0 and timeout_ms_of(0.000001) == 1 and timeout_ms_of(2.5) == 2500
    with Client(EP, discover=False) as sync_client:
        assert sync_client.transport == "stream"
    assert AsyncClient(EP, discover=False).transport == "stream"
    # The HTTP door has no KV.Stream: such a client sends unary calls whatever it was asked.
    assert not AsyncClient("http://127.0.0.1:1", discover=False, transport="stream")._streamed


async def test_answers_are_matched_by_id_in_any_order() -> None:
    stub = Stub()
    client = streamed_client(stub)
    first = asyncio.ensure_future(client.get("a"))
    second = asyncio.ensure_future(client.get("b"))
    stream = await _stream_of(stub)
    req_a, req_b = await stream.next_request(), await stream.next_request()
    assert (req_a.get.key, req_b.get.key) == (b"a", b"b") and req_a.id != req_b.id
    assert req_a.timeout_ms == 5000  # the client's default timeout_s
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=req_b.id, get=kv_pb2.GetResponse()))
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=req_a.id, get=FOUND))
    assert (await first) is not None and (await second) is None
    await client.close()


async def test_cancelled_caller_sends_cancel_and_the_stream_goes_on() -> None:
    stub = Stub()
    client = streamed_client(stub)
    waiting = asyncio.ensure_future(client.get("slow"))
    stream = await _stream_of(stub)
    sent = await stream.next_request()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    cancel = await stream.next_request()
    assert cancel.WhichOneof("op") == "cancel" and cancel.cancel == sent.id
    later = asyncio.ensure_future(client.get("next"))
    req = await stream.next_request()
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=sent.id, get=FOUND))  # too late: dropped
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=req.id, get=FOUND))
    assert (await later) is not None and len(stub.streams) == 1
    await client.close()


async def test_deadline_raises_deadline_exceeded_and_cancels_on_the_node() -> None:
    stub = Stub()
    client = streamed_client(stub)
    with pytest.raises(errors.DeadlineExceeded, match=EP):
        await client.get("slow", timeout_s=0.05)
    stream = stub.streams[0]
    sent, cancel = await stream.next_request(), await stream.next_request()
    assert sent.timeout_ms == 50 and cancel.cancel == sent.id
    await client.close()


async def test_operation_error_keeps_code_message_and_metadata() -> None:
    stub = Stub()
    client = streamed_client(stub)
    waiting = asyncio.ensure_future(client._call(b"k", "Get", kv_pb2.GetRequest(key=b"k"), True, 1))
    stream = await _stream_of(stub)
    req = await stream.next_request()
    error = kv_pb2.StreamError(code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message="no")
    error.metadata["edgekv-current-version-bin"] = b"\x01\x02"
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=req.id, error=error))
    with pytest.raises(edgekv.EdgeKVError, match="no") as excinfo:
        await waiting
    assert type(excinfo.value).__name__ == "FailedPrecondition"
    cause = StreamRpcError(grpc.StatusCode.FAILED_PRECONDITION, "no", (("k-bin", b"\x01"),))
    assert cause.trailing_metadata() == (("k-bin", b"\x01"),)
    await client.close()


async def test_broken_stream_fails_what_was_in_flight_and_reopens() -> None:
    stub = Stub()
    client = streamed_client(stub, retry=edgekv.RetryPolicy(max_attempts=1))
    put = asyncio.ensure_future(client.put("k", "v"))
    stream = await _stream_of(stub)
    await stream.next_request()
    stream.answers.put_nowait(StreamRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    # Sent, then the stream broke: the put's outcome is unknown; it is not sent again.
    with pytest.raises(errors.Unavailable, match="Socket closed"):
        await put
    again = asyncio.ensure_future(client.get("k"))
    while len(stub.streams) < 2:
        await asyncio.sleep(0.001)
    fresh = stub.streams[1]
    req = await fresh.next_request()
    fresh.answers.put_nowait(kv_pb2.StreamResponse(id=req.id, get=FOUND))
    assert (await again) is not None
    await client.close()


async def test_writes_the_ended_stream_never_sent_are_sent_again_on_a_new_one() -> None:
    stub = Stub()
    client = streamed_client(stub)
    warm = asyncio.ensure_future(client.get("k"))
    stream = await _stream_of(stub)
    stream.answers.put_nowait(kv_pb2.StreamResponse(id=(await stream.next_request()).id, get=FOUND))
    await warm
    stream.write_gate = asyncio.Event()  # the first put's write is in flight ...
    first = asyncio.ensure_future(client.put("a", "1"))
    second = asyncio.ensure_future(client.put("b", "2"))  # ... the second waits behind it
    await asyncio.sleep(0.01)
    ended = StreamRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    stream.write_error = ended  # the node ended the stream: grpc fails the write, sends nothing
    stream.write_gate.set()
    stream.answers.put_nowait(ended)
    fresh = await _stream_of(stub, 1)  # both go again, on a new stream
    for _ in range(2):
        request = await fresh.next_request()
        version = common_pb2.Version(timestamp=int(request.put.value), origin="n1")
        fresh.answers.put_nowait(kv_pb2.StreamResponse(id=request.id, put=kv_pb2.PutResponse(
            version=version)))  # fmt: skip
    assert ((await first).version.timestamp, (await second).version.timestamp) == (1, 2)
    assert len(stub.streams) == 2 and not stream.written  # no put went out on the first
    await client.close()


async def test_a_write_no_stream_would_send_fails_unavailable_saying_it_was_not_sent() -> None:
    # Every stream ends before it sends anything: after max_attempts streams the put
    # fails, saying it was never sent (safe to send again), not with an unknown outcome.
    stub = Stub(ending=StreamRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    client = streamed_client(stub, retry=edgekv.RetryPolicy(max_attempts=2))
    with pytest.raises(errors.Unavailable, match="not sent: the stream had ended"):
        await client.put("k", "v")
    assert len(stub.streams) == 2 and not any(s.written for s in stub.streams)
    await client.close()


async def _first_stream_ends(
    error: StreamRpcError,
) -> tuple[Stub, AsyncClient, asyncio.Future[Any]]:
    """A client whose first get is sent on a stream that then ends with ``error``."""
    stub = Stub()
    client = streamed_client(stub)
    first = asyncio.ensure_future(client.get("k"))
    stream = await _stream_of(stub)
    await stream.next_request()
    stream.answers.put_nowait(error)
    return stub, client, first


async def test_node_without_kv_stream_is_served_by_unary_calls() -> None:
    stub, client, first = await _first_stream_ends(
        StreamRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    )
    with pytest.raises(errors.Unimplemented):
        await first  # that one was sent on the stream; the next ones are unary
    assert (await client.get("k")) is not None and stub.unary_gets == 1
    await client.close()


async def test_a_refused_stream_is_served_unary_then_tried_again(monkeypatch: Any) -> None:
    # A node over its per-client stream limit ends the stream RESOURCE_EXHAUSTED before
    # it reads a request: what was sent on it never ran, and goes unary at once.
    monkeypatch.setattr(_stream, "REFUSED_RETRY_S", 1.0)
    stub, client, first = await _first_stream_ends(StreamRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "client 127.0.0.1 has 64 bidi streams (KV.Stream) open; the limit is 64 "
        "(max_streams_per_client)",
    ))  # fmt: skip
    assert (await first) is not None and stub.unary_gets == 1
    assert (await client.get("k")) is not None and stub.unary_gets == 2
    assert len(stub.streams) == 1
    await asyncio.sleep(1.1)  # then the stream is tried again
    again = asyncio.ensure_future(client.get("k"))
    fresh = await _stream_of(stub, 1)
    request = await fresh.next_request()
    fresh.answers.put_nowait(kv_pb2.StreamResponse(id=request.id, get=FOUND))
    assert (await again) is not None and stub.unary_gets == 2
    await client.close()


async def test_other_resource_exhausted_ends_of_the_stream_are_not_refusals() -> None:
    stub, client, first = await _first_stream_ends(StreamRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5000012 vs. 4194304)"
    ))  # fmt: skip
    with pytest.raises(errors.ResourceExhausted):
        await first
    assert stub.unary_gets == 0
    await client.close()


async def _stream_of(stub: Stub, n: int = 0) -> ScriptedStream:
    """The ``n``-th stream the client opened, once it has (within 10 s)."""
    async with asyncio.timeout(10):
        while len(stub.streams) <= n:
            await asyncio.sleep(0.001)
    return stub.streams[n]
