"""The blocking Client's KV.Stream (client/_stream_sync.py) against a scripted stream.

Callers read the stream themselves, one at a time: what the shared SDK tests
cannot show is who reads, how the role moves between threads, and that no
caller waits much past its deadline although the reader is stuck in grpc's
``next()`` (a node that never answers). Bounds are generous (a loaded machine):
they tell "on time" from "never" or "only after the 5 s the others wait".
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from edgekv import Client, errors
from edgekv.client import _stream_sync
from edgekv.client._stream import StreamNotSent, StreamRpcError
from edgekv.client._stream_sync import SILENCE_S, SyncOpStream
from edgekv.v1 import common_pb2, kv_pb2

EP = "127.0.0.1:1"
SLACK_S = 2.0  # what a loaded machine may add to any wait


class ScriptedStream:
    """grpc's response iterator of a KV.Stream: a thread records the requests as grpc's
    request thread would consume them; it answers only what the test puts in ``answers``."""

    def __init__(self, requests: Iterator[kv_pb2.StreamRequest], take: int | None = None) -> None:
        self.written: queue.Queue[kv_pb2.StreamRequest] = queue.Queue()
        self.answers: queue.Queue[Any] = queue.Queue()
        self.readers: list[str] = []  # the thread of each next() call
        self.cancelled = threading.Event()
        self._take = take  # None: every request; n: grpc's thread stalls after n
        threading.Thread(target=self._consume, args=(requests,), daemon=True).start()

    def _consume(self, requests: Iterator[kv_pb2.StreamRequest]) -> None:
        if self._take == 0:
            return
        for taken, request in enumerate(requests, 1):
            self.written.put(request)
            if taken == self._take:
                return

    def __iter__(self) -> ScriptedStream:
        return self

    def __next__(self) -> kv_pb2.StreamResponse:
        self.readers.append(threading.current_thread().name)
        answer = self.answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cancel(self) -> bool:
        self.cancelled.set()
        self.answers.put(StreamRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled"))
        return True

    def is_active(self) -> bool:
        return self.ended is None

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """The node ends the stream; nobody has read that yet."""
        self.ended = StreamRpcError(code, details)
        self.answers.put(self.ended)

    ended: StreamRpcError | None = None

    def next_request(self) -> kv_pb2.StreamRequest:
        return self.written.get(timeout=10)

    def answer(self, request: kv_pb2.StreamRequest, key: bytes = b"") -> None:
        get = kv_pb2.GetResponse(found=True, value=key or request.get.key)
        self.answers.put(kv_pb2.StreamResponse(id=request.id, get=get))


class Stub:
    def __init__(self, take: int | None = None) -> None:
        self.streams: list[ScriptedStream] = []
        self.take = take  # of the first stream's requests (ScriptedStream)

    def Stream(self, requests: Any, metadata: Any = None) -> ScriptedStream:
        self.streams.append(ScriptedStream(requests, None if self.streams else self.take))
        return self.streams[-1]


class Caller:
    """One thread's get on the stream: its result or error, and how long it took."""

    def __init__(self, stream: SyncOpStream, key: bytes, timeout: float | None) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.took_s = -1.0
        rpc = stream.method("Get")

        def run() -> None:
            started = time.monotonic()
            try:
                self.result = rpc(kv_pb2.GetRequest(key=key), timeout=timeout)
            except BaseException as exc:
                self.error = exc
            self.took_s = time.monotonic() - started

        self.thread = threading.Thread(target=run, name=key.decode(), daemon=True)
        self.thread.start()

    def join(self) -> Caller:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the caller never returned"
        return self

    def code(self) -> grpc.StatusCode:
        assert isinstance(self.error, grpc.RpcError), self.error
        return self.error.code()


def start(
    stub: Stub, stream: SyncOpStream, key: bytes, timeout: float | None = 5.0, on: int = 0
) -> Any:
    """Start a caller; return it and its request as stream number ``on`` got it."""
    caller = Caller(stream, key, timeout)
    deadline = time.monotonic() + 10
    while len(stub.streams) <= on:
        assert time.monotonic() < deadline, "no stream opened"
        time.sleep(0.001)
    return caller, stub.streams[on].next_request()


def test_lone_caller_reads_its_own_answer_no_thread_of_ours() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    caller, request = start(stub, stream, b"a", timeout=None)
    stub.streams[0].answer(request)
    assert caller.join().result.value == b"a"
    assert stub.streams[0].readers == ["a"]  # the caller's own thread, no reader thread
    stream.close()


def test_reader_role_moves_to_the_oldest_waiter_answers_out_of_order() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (a, req_a), (b, req_b) = start(stub, stream, b"a"), start(stub, stream, b"b")
    c, req_c = start(stub, stream, b"c")
    scripted = stub.streams[0]
    scripted.answer(req_b)  # read by a, for b
    assert b.join().result.value == b"b"
    scripted.answer(req_a)  # a has its own: it gives the role to c, the oldest waiting
    assert a.join().result.value == b"a"
    scripted.answer(req_c)
    assert c.join().result.value == b"c"
    assert scripted.readers == ["a", "a", "c"] and len(stub.streams) == 1
    # Nobody reads now: the next caller becomes the reader, on the same stream.
    d, req_d = start(stub, stream, b"d")
    scripted.answer(req_d)
    assert d.join().result.value == b"d" and scripted.readers[-1] == "d"
    stream.close()


def test_waiter_deadline_while_another_reads_cancels_only_its_operation() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, req_r), (late, req_late) = start(stub, stream, b"r"), start(stub, stream, b"l", 0.2)
    scripted = stub.streams[0]
    late.join()
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED and late.took_s < 0.2 + SLACK_S
    assert scripted.next_request().cancel == req_late.id  # the node is told
    scripted.answer(req_late)  # too late: dropped
    scripted.answer(req_r)
    assert reader.join().result.value == b"r" and not scripted.cancelled.is_set()


def test_reader_deadline_with_others_in_flight_leaves_with_the_next_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_stream_sync, "SILENCE_S", 5.0)  # a slow test thread is no silence
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, _), (other, req_o) = start(stub, stream, b"r", 0.2), start(stub, stream, b"o")
    scripted = stub.streams[0]
    assert scripted.next_request().cancel  # the watchdog, at the reader's deadline
    scripted.answer(req_o)
    assert reader.join().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert other.join().result.value == b"o"
    assert not scripted.cancelled.is_set()  # the node answers: the stream goes on
    nxt, req_n = start(stub, stream, b"n")
    scripted.answer(req_n)
    assert nxt.join().result.value == b"n" and len(stub.streams) == 1
    stream.close()


def test_hung_node_one_caller_returns_on_time_and_the_stream_reopens() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    caller, _ = start(stub, stream, b"a", 0.2)
    assert caller.join().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caller.took_s < 0.2 + SLACK_S and stub.streams[0].cancelled.is_set()
    again, req = start(stub, stream, b"b", on=1)
    stub.streams[1].answer(req)
    assert again.join().result.value == b"b"
    stream.close()


def test_hung_node_many_callers_none_waits_past_deadline_and_silence() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    callers = [start(stub, stream, b"k%d" % i, 0.3 + 0.1 * i)[0] for i in range(4)]
    for caller in callers:
        caller.join()
    reader, others = callers[0], callers[1:]
    assert reader.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert reader.took_s < 0.3 + SILENCE_S + SLACK_S
    for i, caller in enumerate(others, 1):  # their own deadline, or the stream given up
        assert caller.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert caller.took_s < 0.3 + 0.1 * i + SLACK_S
    assert stub.streams[0].cancelled.is_set()
    stream.close()


def test_silent_stream_after_reader_deadline_fails_others_unavailable() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, _), (other, _) = start(stub, stream, b"r", 0.2), start(stub, stream, b"o", 30)
    assert reader.join().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert other.join().code() == grpc.StatusCode.UNAVAILABLE
    assert "not answering" in str(other.error) and other.took_s < 0.2 + SILENCE_S + SLACK_S
    assert reader.took_s >= 0.2
    stream.close()


def test_close_while_a_caller_reads_fails_everyone_cancelled() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, _), (waiter, _) = start(stub, stream, b"r"), start(stub, stream, b"w")
    stream.close()
    for caller in (reader.join(), waiter.join()):
        assert caller.code() == grpc.StatusCode.CANCELLED and caller.took_s < SLACK_S
        assert "the client is closed" in str(caller.error)
    with pytest.raises(StreamRpcError, match="the client is closed"):
        stream.method("Get")(kv_pb2.GetRequest(key=b"x"), timeout=1)
    stream.close()  # idempotent


def test_broken_stream_fails_all_in_flight_and_the_next_call_reopens() -> None:
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, _), (waiter, _) = start(stub, stream, b"r"), start(stub, stream, b"w")
    stub.streams[0].answers.put(StreamRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    for caller in (reader.join(), waiter.join()):
        assert caller.code() == grpc.StatusCode.UNAVAILABLE and "Socket closed" in str(caller.error)
    again, req = start(stub, stream, b"a", on=1)
    stub.streams[1].answer(req)
    assert again.join().result.value == b"a" and not stream.unsupported
    stub.streams[1].answers.put(StreamRpcError(grpc.StatusCode.UNIMPLEMENTED, "no Stream"))
    last = Caller(stream, b"z", 5.0)  # grpc's thread may not even take it: the end is there
    assert last.join().code() == grpc.StatusCode.UNIMPLEMENTED and stream.unsupported


def test_stream_that_ended_while_idle_is_replaced_before_the_next_operation() -> None:
    # The node stopped and ended its idle streams; nobody read that end. An operation
    # put on that stream would never be sent (and a write fail with an unknown
    # outcome): it goes on a new stream instead.
    stub = Stub()
    stream = SyncOpStream(stub, None)
    first, req = start(stub, stream, b"a")
    stub.streams[0].answer(req)
    assert first.join().result.value == b"a"
    stub.streams[0].end(grpc.StatusCode.UNAVAILABLE, "node node-1 is shutting down")
    again, req = start(stub, stream, b"b", on=1)
    stub.streams[1].answer(req)
    assert again.join().result.value == b"b" and stub.streams[1].readers == ["b"]
    assert stub.streams[0].readers == ["a"]  # the ended stream was never read again
    stream.close()


def test_operations_grpc_never_took_from_the_outbox_fail_as_never_sent() -> None:
    # grpc's request thread took the first request, then stalled (flow control); the
    # stream ends. The second never reached the node: StreamNotSent, which the client
    # sends again at once (a write too); the first's outcome is unknown.
    stub = Stub(take=1)
    stream = SyncOpStream(stub, None)
    sent, _ = start(stub, stream, b"sent")
    queued = Caller(stream, b"queued", 5.0)
    while len(stream._pending) < 2:
        time.sleep(0.001)
    stub.streams[0].end(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert type(sent.join().error) is StreamRpcError
    assert (
        type(queued.join().error) is StreamNotSent and queued.code() == grpc.StatusCode.UNAVAILABLE
    )
    assert errors.never_sent(queued.code(), queued.error.details())  # type: ignore[union-attr]
    stream.close()


def test_blocking_client_sends_a_never_sent_write_again_on_a_new_stream() -> None:
    stub = Stub(take=0)  # the first stream sends nothing before it ends
    with Client(EP, discover=False, transport="stream") as client:
        client._kv_stubs[EP] = stub  # type: ignore[assignment]
        done: list[Any] = []
        writer = threading.Thread(target=lambda: done.append(client.put("k", "v")), daemon=True)
        writer.start()
        while not stub.streams:
            time.sleep(0.001)
        stub.streams[0].end(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        deadline = time.monotonic() + 10
        while len(stub.streams) < 2 and writer.is_alive():
            assert time.monotonic() < deadline, "no second stream"
            time.sleep(0.001)
        assert not done, "the put returned without a second stream"
        request = stub.streams[1].next_request()
        assert request.put.key == b"k"
        put = kv_pb2.PutResponse(version=common_pb2.Version(timestamp=7, origin="n1"))
        stub.streams[1].answers.put(kv_pb2.StreamResponse(id=request.id, put=put))
        writer.join(10)
        assert done and done[0].version.timestamp == 7


def test_blocking_client_over_the_scripted_stream_maps_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_stream_sync, "SILENCE_S", 0.1)
    stub = Stub()
    with Client(EP, discover=False, transport="stream") as client:
        client._kv_stubs[EP] = stub  # type: ignore[assignment]
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded, match=EP):
            client.get("k", timeout_s=0.2)
        assert time.monotonic() - started < 0.2 + SLACK_S


def test_many_threads_answers_shuffled_some_never_every_caller_returns_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """8 threads x 60 gets on one stream; a node thread answers in shuffled batches and
    leaves every 7th unanswered: each caller gets its own answer, or DEADLINE_EXCEEDED
    for the unanswered ones, and nobody waits for ever."""
    monkeypatch.setattr(_stream_sync, "SILENCE_S", 5.0)  # a starved node thread is no hang
    stub = Stub()
    stream = SyncOpStream(stub, None)
    rpc = stream.method("Get")
    stop = threading.Event()

    def node() -> None:
        rnd = random.Random(5)
        while not stop.is_set():
            while not stub.streams:
                time.sleep(0.001)
            scripted, batch = stub.streams[-1], []
            try:
                batch.append(scripted.written.get(timeout=0.05))
                while len(batch) < 4:
                    batch.append(scripted.written.get_nowait())
            except queue.Empty:
                pass
            rnd.shuffle(batch)
            for request in batch:
                if request.HasField("get") and int(request.get.key.split(b"/")[1]) % 7:
                    scripted.answer(request)

    failures: list[str] = []

    def caller(t: int) -> None:
        for i in range(60):
            key = b"%d/%d" % (t, i)
            try:
                got = rpc(kv_pb2.GetRequest(key=key), timeout=0.3)
                if i % 7 == 0 or got.value != key:
                    failures.append(f"{key!r} got {got.value!r}")
            except grpc.RpcError as exc:
                if i % 7 or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    failures.append(f"{key!r}: {exc!r}")

    threading.Thread(target=node, daemon=True).start()
    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    assert not failures, failures[:5]
    stream.close()


def test_reader_interrupted_ends_the_stream_others_fail_and_it_reopens() -> None:
    """A KeyboardInterrupt in the reader's next() leaves grpc's receive half-done: the
    stream is ended (not read again by another thread), the interrupt goes on up, the
    others fail UNAVAILABLE, and the next call opens a new stream."""
    stub = Stub()
    stream = SyncOpStream(stub, None)
    (reader, _), (waiter, _) = start(stub, stream, b"r"), start(stub, stream, b"w")
    stub.streams[0].answers.put(KeyboardInterrupt())
    assert isinstance(reader.join().error, KeyboardInterrupt)
    assert (
        waiter.join().code() == grpc.StatusCode.UNAVAILABLE and stub.streams[0].cancelled.is_set()
    )
    again, req = start(stub, stream, b"a", on=1)
    stub.streams[1].answer(req)
    assert again.join().result.value == b"a"
    stream.close()
