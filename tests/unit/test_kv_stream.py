"""server/kv_stream.py: one KV.Stream's operations, deadlines, cancels and bound.

The operations here are a scripted stand-in for KVMessages whose Get waits
until the test releases it, so an operation can be caught in flight (a real
node answers a local get before anything could cancel it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from edgekv.coordinator import Call, GetResult
from edgekv.errors import InvalidArgument, PermissionDenied
from edgekv.principal import ANYONE
from edgekv.server.interceptors import InflightLimiter
from edgekv.server.kv_stream import StreamOps
from edgekv.server.stream_wire import encode_response
from edgekv.v1 import kv_pb2

Op = kv_pb2.StreamRequest


class Messages:
    """KVMessages' methods: get waits for ``release`` (keyed by key); put fails on b""."""

    def __init__(self) -> None:
        self.release: dict[bytes, asyncio.Event] = {}
        self.cancelled: list[bytes] = []
        self.calls: list[Call] = []

    async def get(self, request: kv_pb2.GetRequest, call: Call) -> kv_pb2.GetResponse:
        self.calls.append(call)
        event = self.release.setdefault(request.key, asyncio.Event())
        try:
            await event.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.key)
            raise
        return kv_pb2.GetResponse(found=True, value=request.key)

    def get_now(self, request: kv_pb2.GetRequest, call: Call, out: kv_pb2.GetResponse) -> bool:
        if request.key.startswith(b"now/"):  # KVMessages.get_now: a LOCAL read held here
            out.found, out.value = True, request.key
            return True
        if request.key == b"denied":
            raise PermissionDenied("token may not read key b'denied'")
        return False  # the others wait in get()

    def get_key_now(self, key: bytes, call: Call) -> GetResult | None:
        if key.startswith(b"now/"):
            return GetResult((key, 7, "n1", 0), "n1")
        if key == b"denied":
            raise PermissionDenied("token may not read key b'denied'")
        return None

    async def put(self, request: kv_pb2.PutRequest, call: Call) -> kv_pb2.PutResponse:
        if not request.key:
            raise InvalidArgument("key is empty; keys are 1 to 1024 bytes")
        return kv_pb2.PutResponse(served_by="n1")

    batch_get = delete = write = put


class Stream:
    """The request side: the test puts requests; None half-closes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def read(self) -> Any:
        request = await self.queue.get()
        return grpc.aio.EOF if request is None else request


class Context:
    """The servicer context: ``read`` takes the requests of ``requests``; ``write`` records
    answers (and waits while ``unblocked`` is clear)."""

    def __init__(
        self, requests: Stream, answers: list[kv_pb2.StreamResponse] | None = None
    ) -> None:
        self.read = requests.read
        self.answers: list[kv_pb2.StreamResponse] = [] if answers is None else answers
        self.unblocked = asyncio.Event()
        self.unblocked.set()
        self.written_as: list[type] = []

    async def write(self, answer: kv_pb2.StreamResponse | bytes) -> None:
        await self.unblocked.wait()
        self.written_as.append(type(answer))
        # as the client reads it: what grpc writes through the stream's encoder
        self.answers.append(kv_pb2.StreamResponse.FromString(encode_response(answer)))


async def started(limit: int = 8) -> tuple[Messages, Context, Stream, asyncio.Task[None]]:
    messages, requests = Messages(), Stream()
    context = Context(requests)
    ops = StreamOps(messages, limit)  # type: ignore[arg-type]
    serving = asyncio.ensure_future(ops.serve(context, Call(ANYONE)))
    return messages, context, requests, serving


async def until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def result(answer: kv_pb2.StreamResponse) -> str:
    return answer.WhichOneof("result") or ""


async def test_operations_answer_out_of_order_and_half_close_drains() -> None:
    messages, context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"slow")))
    requests.queue.put_nowait(Op(id=2, put=kv_pb2.PutRequest(key=b"k")))
    requests.queue.put_nowait(Op(id=3, put=kv_pb2.PutRequest(key=b"")))
    requests.queue.put_nowait(None)  # half-close: the stream ends once 1 is answered
    await until(lambda: len(context.answers) == 2)
    assert [a.id for a in context.answers] == [2, 3] and not serving.done()
    assert context.answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    messages.release[b"slow"].set()
    await serving
    assert [a.id for a in context.answers] == [2, 3, 1] and result(context.answers[2]) == "get"


async def test_cancel_and_deadline_end_only_their_operation() -> None:
    messages, context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"a")))
    requests.queue.put_nowait(Op(id=2, timeout_ms=20, get=kv_pb2.GetRequest(key=b"b")))
    requests.queue.put_nowait(Op(id=3, get=kv_pb2.GetRequest(key=b"c")))
    await until(lambda: len(messages.calls) == 3)  # all three running
    requests.queue.put_nowait(Op(id=99, cancel=1))
    requests.queue.put_nowait(Op(id=98, cancel=12345))  # not in flight: ignored
    await until(lambda: len(context.answers) == 2)
    by_id = {a.id: a.error for a in context.answers}
    assert by_id[1].code == grpc.StatusCode.CANCELLED.value[0]
    assert by_id[1].message == "operation 1 was cancelled by the client"
    assert by_id[2].code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "within its 20 ms (timeout_ms)" in by_id[2].message
    assert sorted(messages.cancelled) == [b"a", b"b"]
    assert messages.calls[1].timeout_s() is not None and messages.calls[0].timeout_s() is None
    messages.release[b"c"].set()
    await until(lambda: len(context.answers) == 3)
    requests.queue.put_nowait(None)
    await serving


async def test_stream_ending_cancels_what_runs() -> None:
    messages, context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"a")))
    await until(lambda: messages.calls)
    serving.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await serving
    await until(lambda: messages.cancelled == [b"a"])
    assert context.answers == []


async def test_over_the_bound_is_refused_and_unread_answers_count() -> None:
    _messages, context, requests, serving = await started(limit=2)
    context.unblocked.clear()  # the client reads nothing
    for i in (1, 2):
        requests.queue.put_nowait(Op(id=i, put=kv_pb2.PutRequest(key=b"k")))
    requests.queue.put_nowait(Op(id=3, put=kv_pb2.PutRequest(key=b"k")))
    await asyncio.sleep(0.05)
    assert context.answers == []  # all three wait to be written
    context.unblocked.set()
    await until(lambda: len(context.answers) == 3)
    refused = [a for a in context.answers if result(a) == "error"]
    assert [a.id for a in refused] == [3]
    assert refused[0].error.message == (
        "this stream has 2 operations in flight; the limit is 2 (max_stream_inflight)"
    )
    requests.queue.put_nowait(None)
    await serving


async def test_an_operation_id_in_flight_cannot_be_reused() -> None:
    messages, _context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"a")))
    await until(lambda: messages.calls)
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"b")))
    with pytest.raises(InvalidArgument, match="id 1 is already in flight on this stream"):
        await serving
    await until(lambda: messages.cancelled == [b"a"])


async def test_cancel_read_right_after_its_operation_cancels_it() -> None:
    # An operation starts in the step that read it (eager.start): a cancel read
    # next finds it running and cancels it, even before its task took a step.
    messages, context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=5, get=kv_pb2.GetRequest(key=b"a")))
    requests.queue.put_nowait(Op(id=6, cancel=5))
    await until(lambda: context.answers)
    assert context.answers[0].error.code == grpc.StatusCode.CANCELLED.value[0]
    assert messages.cancelled == [b"a"]
    requests.queue.put_nowait(None)
    await serving


async def test_operation_that_finishes_at_once_is_answered_in_order() -> None:
    # Puts here never suspend: each is answered from the step that read it, in order,
    # and a half-close right after them ends the stream once all are written.
    _messages, context, requests, serving = await started()
    for i in range(1, 6):
        requests.queue.put_nowait(Op(id=i, timeout_ms=1, put=kv_pb2.PutRequest(key=b"k")))
    requests.queue.put_nowait(None)
    await serving
    assert [a.id for a in context.answers] == [1, 2, 3, 4, 5]
    assert all(result(a) == "put" for a in context.answers)


async def test_local_read_is_answered_without_waiting_and_fails_as_unary() -> None:
    # A get that get_now answers (a LOCAL read held here) is answered from the step
    # that read it, before a slow get read earlier; get_now's error is its answer.
    messages, context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"slow")))
    requests.queue.put_nowait(Op(id=2, get=kv_pb2.GetRequest(key=b"now/a")))
    requests.queue.put_nowait(Op(id=3, get=kv_pb2.GetRequest(key=b"denied")))
    await until(lambda: len(context.answers) == 2)
    assert [(a.id, result(a)) for a in context.answers] == [(2, "get"), (3, "error")]
    assert context.answers[0].get.value == b"now/a"
    assert context.answers[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert context.answers[1].error.message == "token may not read key b'denied'"
    messages.release[b"slow"].set()
    requests.queue.put_nowait(None)
    await serving
    assert [a.id for a in context.answers] == [2, 3, 1]


async def test_local_read_off_the_wire_is_answered_in_bytes_and_fails_as_unary() -> None:
    # What stream_wire.decode_request makes of a plain LOCAL get: (id, timeout_ms, key).
    # Held here: answered now, as bytes; one that has to wait goes to get() as any get.
    messages, context, requests, serving = await started()
    requests.queue.put_nowait((1, 0, b"slow"))
    requests.queue.put_nowait((2, 0, b"now/a"))
    requests.queue.put_nowait((3, 0, b"denied"))
    await until(lambda: len(context.answers) == 2)
    assert [(a.id, result(a)) for a in context.answers] == [(2, "get"), (3, "error")]
    assert context.written_as == [bytes, kv_pb2.StreamResponse]
    assert context.answers[0].get.value == b"now/a"
    assert context.answers[0].get.version.origin == "n1"
    assert context.answers[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert context.answers[1].error.message == "token may not read key b'denied'"
    assert [call for call in messages.calls] and messages.release.keys() == {b"slow"}
    requests.queue.put_nowait((4, 0, b"slow2"))  # ids in flight: the same rule as any op
    requests.queue.put_nowait((1, 0, b"now/b"))
    with pytest.raises(InvalidArgument, match="id 1 is already in flight"):
        await serving


async def test_each_operation_has_a_call_of_its_own() -> None:
    # The request layer sets an operation's read level and session token on its Call
    # (kv_messages._read_level): shared, a STRONG get made the stream's later LOCAL
    # gets of keys without a home fail, and one SESSION token made others wait.
    messages, _context, requests, serving = await started()
    requests.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"a")))
    requests.queue.put_nowait(Op(id=2, get=kv_pb2.GetRequest(key=b"b")))
    await until(lambda: len(messages.calls) == 2)
    first, second = messages.calls
    assert first is not second
    first.consistency, first.session_token = 2, b"token"
    assert (second.consistency, second.session_token) == (0, b"")
    for key in (b"a", b"b"):
        messages.release[key].set()
    requests.queue.put_nowait(None)
    await serving


async def test_operations_count_as_their_clients_calls_across_streams() -> None:
    limiter = InflightLimiter(max_inflight_per_client=3)
    messages = Messages()
    answers: list[kv_pb2.StreamResponse] = []  # both streams' answers, in the order written
    ops = StreamOps(messages, 8, admission=limiter)  # type: ignore[arg-type]
    one, two = Stream(), Stream()
    serving = [
        asyncio.ensure_future(ops.serve(Context(s, answers), Call(ANYONE), "ipv4:10.0.0.1"))
        for s in (one, two)
    ]
    limiter.enter_call("ipv4:10.0.0.1")  # a unary call of the same client
    one.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"a")))
    two.queue.put_nowait(Op(id=1, get=kv_pb2.GetRequest(key=b"b")))
    await until(lambda: len(messages.calls) == 2)
    assert limiter.inflight == {"ipv4:10.0.0.1": 3}
    two.queue.put_nowait(Op(id=2, get=kv_pb2.GetRequest(key=b"c")))  # a 4th call: refused
    await until(lambda: len(answers) == 1)
    assert answers[0].id == 2 and answers[0].error.message == (
        "client ipv4:10.0.0.1 has 3 calls in flight; the limit is 3 (max_inflight_per_client)"
    )
    messages.release[b"a"].set()  # answered: its slot is free again
    await until(lambda: limiter.inflight == {"ipv4:10.0.0.1": 2})
    two.queue.put_nowait(None)
    serving[1].cancel()  # a stream that ends with an operation running releases it too
    with pytest.raises(asyncio.CancelledError):
        await serving[1]
    assert limiter.inflight == {"ipv4:10.0.0.1": 1}
    one.queue.put_nowait(None)
    await serving[0]
    limiter.leave_call("ipv4:10.0.0.1")
    assert limiter.inflight == {}
