"""KV.Stream on the gRPC door: point operations multiplexed over one bidi stream.

A client sends ``StreamRequest``s (an id, a deadline, one Get, Put, Delete,
BatchGet or Write) and reads one ``StreamResponse`` per operation, in any
order. Each operation is the unary method's: the same :class:`KVMessages`
method with the same request message (every field, #13's consistency levels,
session tokens, conditions and await_replicas included), the same coordinator,
the same errors, so a rule exists once. What is the stream's own:

* **Auth once**: the ``Call`` the door built when the stream opened (principal,
  credentials, forwarded-by) is the caller of every operation; each operation
  gets its own deadline (``timeout_ms``, else the stream's).
* **Concurrency**: every operation starts as soon as it is read and, if it
  has to wait (a replica, a forwarded call), goes on as a task of its own
  while the stream reads on; one that finishes at once costs no task
  (edgekv/eager.py), and a LOCAL get of a key held here not even a coroutine
  (``KVMessages.get_key_now``, answered in the step that read it; such a get is
  read off the wire and answered in bytes, without protobuf objects:
  stream_wire.py). At most
  ``max_stream_inflight`` of one stream run or wait to be answered at once, and
  the next is answered RESOURCE_EXHAUSTED (naming the limit) without running.
* **Backpressure**: answers are written one at a time (one in flight, the
  others queued) and a write waits for HTTP/2 flow control, so a client that stops
  reading stops the operations' answers, then the refusals, then the reading
  of its requests: at most ``max_stream_inflight`` answers exist per stream.
* **Cancellation**: a ``cancel`` op cancels that operation (answered CANCELLED),
  a deadline cancels it (DEADLINE_EXCEEDED) (an operation that finished in the
  step that read it was answered before either could reach it), and the stream ending (the client
  went away) cancels every operation still running. When the node stops, the
  stream reads no more requests, answers those it started, then ends with
  UNAVAILABLE (coordinator/draining.py): the client reopens, elsewhere.
* **Errors**: an EdgeKVError ends only its operation, as a ``StreamError`` with
  the code and message the unary method would have ended with (and its
  trailing metadata); a StreamRequest without an operation, or with an id in
  flight, ends the stream with INVALID_ARGUMENT (the client is broken).

Runs on the node's event loop; one :class:`StreamOps` serves every stream.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import grpc

from edgekv import eager
from edgekv.coordinator import Call
from edgekv.coordinator.draining import StreamDrain
from edgekv.errors import (
    DeadlineExceeded,
    EdgeKVError,
    InvalidArgument,
    OtherStatus,
    ResourceExhausted,
    Unavailable,
    grpc_code_for,
)
from edgekv.native import stream_get_answer
from edgekv.server.interceptors import undecodable_reason
from edgekv.server.kv_messages import KVMessages
from edgekv.server.stream_wire import ANSWER, Answer, error_response
from edgekv.v1 import kv_pb2

log = logging.getLogger(__name__)

_StreamRequest = kv_pb2.StreamRequest
_StreamResponse = kv_pb2.StreamResponse
_EOF = grpc.aio.EOF
# The operations of a StreamRequest: oneof field -> the unary method's name (for metrics).
METHOD_OF_OP = {
    "get": "Get",
    "put": "Put",
    "delete": "Delete",
    "batch_get": "BatchGet",
    "write": "Write",
}
_OK = "OK"
# The kind of a LOCAL get that native.stream_plain_get read (stream_wire.py): (id, timeout, key).
_PLAIN_GET = "plain get"


class OperationRecorder(Protocol):
    """Counts and times one finished operation (edgekv.metrics.OperationRecorder)."""

    def record(self, method: str, code: str, seconds: float) -> None: ...


class CallAdmission(Protocol):
    """Counts a client's calls in flight against its limit (server.interceptors.InflightLimiter)."""

    def enter_call(self, client: str) -> None: ...

    def leave_call(self, client: str) -> None: ...


class StreamOps:
    """Serves the KV.Stream calls of one node; shared by every stream, stateless.

    ``max_inflight`` is ``limits.max_stream_inflight``; ``recorder`` counts
    each operation under its unary method's name (None: not counted);
    ``admission`` counts each operation as one of its client's calls in flight
    (``limits.max_inflight_per_client``, shared with its unary calls), so that
    streams do not multiply what one client address may run.
    """

    __slots__ = (
        "_admission",
        "_drain",
        "_get_key_now",
        "_get_now",
        "_max_inflight",
        "_ops",
        "_recorder",
    )

    def __init__(
        self,
        messages: KVMessages,
        max_inflight: int,
        recorder: OperationRecorder | None = None,
        drain: StreamDrain | None = None,
        admission: CallAdmission | None = None,
    ) -> None:
        self._ops: dict[str, Callable[[Any, Call], Awaitable[Any]]] = {
            "get": messages.get,
            "put": messages.put,
            "delete": messages.delete,
            "batch_get": messages.batch_get,
            "write": messages.write,
        }
        self._get_now = messages.get_now  # a LOCAL read answered without waiting
        self._get_key_now = messages.get_key_now  # the same, for a get read off the wire
        self._max_inflight = max_inflight
        self._recorder = recorder
        # Ends every stream with UNAVAILABLE when the node stops (coordinator/draining.py).
        self._drain = drain or StreamDrain("this node")
        self._admission = admission

    def serve(
        self,
        context: grpc.aio.ServicerContext,
        call: Call,
        client: str = "",
    ) -> Coroutine[Any, Any, None]:
        """Answer every operation of one stream (await it); done once the client
        half-closed and every answer is written. Raises InvalidArgument for a broken
        client. ``client``: the caller's address, as the admission counts it.

        Requests are read with ``context.read()``, not through the handler's request
        iterator: that iterator is two async generators around the same read (grpc's
        and the malformed-request check's), a measurable share of a streamed get.
        Not a coroutine itself: one frame less to resume on every request read."""
        return _OneStream(self, context, call, client).run(context.read)


class _OneStream:
    """The state of one KV.Stream: its operations in flight and its answers to write.

    Owned by the stream's handler task, on the node's event loop. An operation
    runs at once, in the step that read it (eager.start): one that finishes
    there (a local read) never makes a task; one that suspends (a write waiting
    for replicas, a forwarded read) goes on as a task in ``_running``, where a
    cancel or its deadline can reach it. Answers are written one at a time by
    a writer without a task (eager.drive), started by the first answer queued
    while it is idle. ``_outstanding`` counts the operations started whose
    answer is not written yet (the bound).
    """

    __slots__ = (
        "_admitted",
        "_call",
        "_cancelled",
        "_client",
        "_context",
        "_drained",
        "_loop",
        "_on_written",
        "_ops",
        "_outbox",
        "_outstanding",
        "_running",
        "_write_failed",
        "_writing",
    )

    def __init__(
        self, ops: StreamOps, context: grpc.aio.ServicerContext, call: Call, client: str
    ) -> None:
        self._ops = ops
        self._client = client
        # Operations counted by ops._admission and not yet released: each is released
        # as its answer stops counting, and whatever is left when the stream ends.
        self._admitted = 0
        self._context = context
        self._call = call
        self._loop = asyncio.get_running_loop()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._cancelled: dict[int, EdgeKVError] = {}  # why an operation was cancelled
        self._outstanding = 0
        self._drained: asyncio.Future[None] | None = None
        # Answers waiting for the writer, each with the future to resolve once it is
        # written (None: an operation's answer, counted in _outstanding).
        self._outbox: collections.deque[tuple[Answer, asyncio.Future[None] | None]] = (
            collections.deque()
        )
        self._writing: asyncio.Future[None] | None = None  # the answer being written
        self._write_failed: BaseException | None = None  # the stream cannot be written to
        self._on_written = self._written  # one bound method for every write

    async def run(self, read: Callable[[], Awaitable[Any]]) -> None:
        """Serve the requests ``read()`` returns until it returns ``grpc.aio.EOF``."""
        limit = self._ops._max_inflight
        drain = self._ops._drain
        parked = drain.park()
        try:
            while True:
                try:
                    request = await parked.read(read)
                except Unavailable:  # the node is stopping: answer what runs, then end
                    await self._answered()
                    raise
                if type(request) is tuple:  # a LOCAL get, read without protobuf: stream_wire.py
                    request_id, timeout_ms, op = request
                    kind = _PLAIN_GET
                elif type(request) is _StreamRequest:
                    kind = request.WhichOneof("op")
                    request_id = request.id
                    if kind == "cancel":
                        self._cancel(request.cancel, OtherStatus(
                            f"operation {request.cancel} was cancelled by the client",
                            grpc.StatusCode.CANCELLED,
                        ))  # fmt: skip
                        continue
                    if kind is None:
                        raise InvalidArgument(
                            f"stream request id {request_id} carries no operation; set one of "
                            "get, put, delete, batch_get, write or cancel"
                        )
                    op, timeout_ms = getattr(request, kind), request.timeout_ms
                elif request is _EOF:
                    break
                else:
                    raise InvalidArgument(undecodable_reason(request))
                if request_id in self._running:
                    raise InvalidArgument(
                        f"stream request id {request_id} is already in flight on this stream; "
                        "ids must be unique among the operations in flight"
                    )
                if self._outstanding >= limit:
                    # Written before the next request is read: a client that reads no
                    # answers stops being read (backpressure).
                    refused = self._loop.create_future()
                    self._queue(error_response(request_id, ResourceExhausted(
                        f"this stream has {self._outstanding} operations in flight; the limit "
                        f"is {limit} (max_stream_inflight)"
                    )), refused)  # fmt: skip
                    await refused
                    continue
                admission = self._ops._admission
                if admission is not None:
                    try:
                        admission.enter_call(self._client)
                    except ResourceExhausted as exc:  # the client's calls, all doors
                        refused = self._loop.create_future()
                        self._queue(error_response(request_id, exc), refused)
                        await refused
                        continue
                    self._admitted += 1
                self._start(request_id, kind, op, timeout_ms)
            await self._answered()  # half-closed: answer what is still running
        finally:
            drain.unpark(parked)
            for task in list(self._running.values()):
                task.cancel()
            admission, left, self._admitted = self._ops._admission, self._admitted, 0
            for _ in range(left):
                admission.leave_call(self._client)  # type: ignore[union-attr]

    async def _answered(self) -> None:
        """Wait until every operation started is answered."""
        while self._outstanding:
            self._drained = self._loop.create_future()
            await self._drained

    def _start(self, request_id: int, kind: str, op: Any, timeout_ms: int) -> None:
        self._outstanding += 1
        started = time.perf_counter()
        base = self._call
        wire = None
        if kind is _PLAIN_GET:  # ``op`` is the key: the answer is written without protobuf
            kind = "get"
            try:
                result = self._ops._get_key_now(op, base)
                if result is not None and not result.session_token:
                    wire = stream_get_answer(request_id, result.found, result.served_by)
            except Exception as exc:
                self._finish(kind, *self._failed(request_id, kind, exc), started)
                return
            if wire is not None:
                self._finish(kind, wire, _OK, started)
                return
            op = kv_pb2.GetRequest(key=op)  # it has to wait: as any other get (not tried again)
        elif kind == "get":
            # A LOCAL read of a key held here is answered now, with no Call, coroutine or
            # task of its own (get_now changes nothing on the stream's Call).
            answer = _StreamResponse(id=request_id)
            try:
                done = self._ops._get_now(op, base, answer.get)
            except Exception as exc:
                self._finish(kind, *self._failed(request_id, kind, exc), started)
                return
            if done:
                self._finish(kind, answer, _OK, started)
                return
        # A Call of its own: the request layer sets its read level and session token on
        # it (kv_messages.py), which must not leak into the stream's other operations.
        remaining = base.time_remaining
        deadline = 0.0
        if timeout_ms:
            loop = self._loop
            deadline = loop.time() + timeout_ms / 1000.0
            remaining = lambda: deadline - loop.time()  # noqa: E731
        call = Call(base.principal, base.credentials, base.forwarded_by, remaining)
        # Runs now; only an operation that suspends becomes a task (and gets a timer):
        # one that finishes in this step cannot be cancelled nor outlive its deadline.
        coro = self._run_op(request_id, kind, self._ops._ops[kind](op, call), started)
        _, task = eager.start(coro, self._loop)
        if task is None:
            return
        self._running[request_id] = task
        if timeout_ms:
            timer = self._loop.call_at(deadline, self._cancel, request_id, DeadlineExceeded(
                f"operation {request_id} did not finish within its {timeout_ms} ms (timeout_ms)"
            ))  # fmt: skip
            task.add_done_callback(lambda _: timer.cancel())

    def _cancel(self, request_id: int, why: EdgeKVError) -> None:
        task = self._running.get(request_id)
        if task is not None and request_id not in self._cancelled:
            self._cancelled[request_id] = why
            task.cancel()

    async def _run_op(
        self, request_id: int, kind: str, running: Awaitable[Any], started: float
    ) -> None:
        code = _OK
        try:
            answer = ANSWER[kind](request_id, await running)
        except asyncio.CancelledError:
            why = self._cancelled.pop(request_id, None)
            if why is None:
                self._outstanding -= 1
                self._release_one()
                self._wake_drained()
                raise  # the stream is ending
            answer, code = error_response(request_id, why), grpc_code_for(why).name
        except Exception as exc:
            answer, code = self._failed(request_id, kind, exc)
        finally:
            if self._running:
                self._running.pop(request_id, None)
            if self._cancelled:  # a cancel that came too late to matter
                self._cancelled.pop(request_id, None)
        self._finish(kind, answer, code, started)

    @staticmethod
    def _failed(request_id: int, kind: str, exc: Exception) -> tuple[kv_pb2.StreamResponse, str]:
        """The answer and status code of an operation that raised ``exc``."""
        if isinstance(exc, EdgeKVError):
            return error_response(request_id, exc), grpc_code_for(exc).name
        # A bug: this operation fails, the stream goes on.
        log.exception("KV.Stream operation %s (%s) failed", request_id, kind, exc_info=exc)
        unknown = OtherStatus(f"unexpected error: {exc!r}", grpc.StatusCode.UNKNOWN)
        return error_response(request_id, unknown), "UNKNOWN"

    def _finish(self, kind: str, answer: Answer, code: str, started: float) -> None:
        """Send an operation's answer, then count it."""
        elapsed = time.perf_counter() - started
        self._queue(answer, None)  # the answer leaves first; counting it is off its path
        recorder = self._ops._recorder
        if recorder is not None:
            recorder.record(METHOD_OF_OP[kind], code, elapsed)

    def _queue(self, answer: Answer, written: asyncio.Future[None] | None) -> None:
        """Write ``answer`` now if no write is in flight, else after those queued."""
        if self._writing is None and self._write_failed is None:
            self._write(answer, written)
        else:
            self._outbox.append((answer, written))
            if self._write_failed is not None:
                self._written(self._write_failed)

    def _write(self, answer: Answer, written: asyncio.Future[None] | None) -> None:
        # One write in flight per call (grpc's rule); a write waits for flow control.
        self._writing = _NO_WAITER if written is None else written
        eager.drive(self._context.write(answer), self._on_written, self._loop)

    def _written(self, failure: BaseException | None) -> None:
        """The answer in flight is written (or the stream cannot be written to): next one."""
        if failure is not None and self._write_failed is None:
            self._write_failed = failure  # the client went away: drop every answer from now
        done, self._writing = self._writing, None
        self._settle(done)
        outbox = self._outbox
        if failure is None and self._write_failed is None:
            if outbox:
                self._write(*outbox.popleft())
            return
        while outbox:
            self._settle(outbox.popleft()[1] or _NO_WAITER)

    def _settle(self, done: asyncio.Future[None] | None) -> None:
        if done is _NO_WAITER:  # an operation's answer: it no longer counts
            self._outstanding -= 1
            self._release_one()
            self._wake_drained()
        elif done is not None and not done.done():
            done.set_result(None)

    def _release_one(self) -> None:
        if self._admitted:
            self._admitted -= 1
            self._ops._admission.leave_call(self._client)  # type: ignore[union-attr]

    def _wake_drained(self) -> None:
        drained = self._drained
        if not self._outstanding and drained is not None and not drained.done():
            drained.set_result(None)


# Stands for "an operation's answer" in _OneStream._writing (no one awaits it).
_NO_WAITER: Any = object()


__all__ = ["METHOD_OF_OP", "CallAdmission", "OperationRecorder", "StreamOps"]
