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
* **Concurrency**: every operation runs as its own task; at most
  ``max_stream_inflight`` of one stream run or wait to be answered at once, and
  the next is answered RESOURCE_EXHAUSTED (naming the limit) without running.
* **Backpressure**: answers are written one at a time (one writer holds the
  lock) and a write waits for HTTP/2 flow control, so a client that stops
  reading stops the operations' answers, then the refusals, then the reading
  of its requests: at most ``max_stream_inflight`` answers exist per stream.
* **Cancellation**: a ``cancel`` op cancels that operation (answered CANCELLED),
  a deadline cancels it (DEADLINE_EXCEEDED), and the stream ending (the client
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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

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
from edgekv.server.kv_messages import KVMessages
from edgekv.server.status import trailing_metadata_of
from edgekv.v1 import kv_pb2

log = logging.getLogger(__name__)

_StreamResponse = kv_pb2.StreamResponse
_StreamError = kv_pb2.StreamError
# The operations of a StreamRequest: oneof field -> the unary method's name (for metrics).
METHOD_OF_OP = {
    "get": "Get",
    "put": "Put",
    "delete": "Delete",
    "batch_get": "BatchGet",
    "write": "Write",
}
_ANSWER: dict[str, Callable[[int, Any], kv_pb2.StreamResponse]] = {
    "get": lambda i, r: _StreamResponse(id=i, get=r),
    "put": lambda i, r: _StreamResponse(id=i, put=r),
    "delete": lambda i, r: _StreamResponse(id=i, delete=r),
    "batch_get": lambda i, r: _StreamResponse(id=i, batch_get=r),
    "write": lambda i, r: _StreamResponse(id=i, write=r),
}
_OK = "OK"


class OperationRecorder(Protocol):
    """Counts and times one finished operation (edgekv.metrics.OperationRecorder)."""

    def record(self, method: str, code: str, seconds: float) -> None: ...


def error_response(request_id: int, exc: EdgeKVError) -> kv_pb2.StreamResponse:
    """The StreamResponse failing operation ``request_id`` as the unary method fails."""
    error = _StreamError(code=grpc_code_for(exc).value[0], message=str(exc))
    for key, value in trailing_metadata_of(exc):
        error.metadata[key] = value if isinstance(value, bytes) else value.encode()
    return _StreamResponse(id=request_id, error=error)


class StreamOps:
    """Serves the KV.Stream calls of one node; shared by every stream, stateless.

    ``max_inflight`` is ``limits.max_stream_inflight``; ``recorder`` counts
    each operation under its unary method's name (None: not counted).
    """

    __slots__ = ("_drain", "_max_inflight", "_ops", "_recorder")

    def __init__(
        self,
        messages: KVMessages,
        max_inflight: int,
        recorder: OperationRecorder | None = None,
        drain: StreamDrain | None = None,
    ) -> None:
        self._ops: dict[str, Callable[[Any, Call], Awaitable[Any]]] = {
            "get": messages.get,
            "put": messages.put,
            "delete": messages.delete,
            "batch_get": messages.batch_get,
            "write": messages.write,
        }
        self._max_inflight = max_inflight
        self._recorder = recorder
        # Ends every stream with UNAVAILABLE when the node stops (coordinator/draining.py).
        self._drain = drain or StreamDrain("this node")

    async def serve(
        self,
        requests: AsyncIterator[kv_pb2.StreamRequest],
        context: grpc.aio.ServicerContext,
        call: Call,
    ) -> None:
        """Answer every operation of one stream; returns once the client half-closed
        and every answer is written. Raises InvalidArgument for a broken client."""
        await _OneStream(self, context, call).run(requests)


class _OneStream:
    """The state of one KV.Stream: its operations in flight and its writer lock.

    Owned by the stream's handler task and its operations' tasks, all on the
    node's event loop. ``_running`` holds the operations that have not finished
    (a cancel can reach them); ``_outstanding`` counts those plus the finished
    ones whose answer is not written yet (the bound).
    """

    __slots__ = (
        "_call",
        "_cancelled",
        "_context",
        "_drained",
        "_lock",
        "_loop",
        "_ops",
        "_outstanding",
        "_running",
        "_unstarted",
    )

    def __init__(self, ops: StreamOps, context: grpc.aio.ServicerContext, call: Call) -> None:
        self._ops = ops
        self._context = context
        self._call = call
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._running: dict[int, asyncio.Task[None]] = {}
        # Operations whose task has not run yet: cancelling such a task would skip
        # its body (and its answer), so a cancel only marks them in _cancelled.
        self._unstarted: set[int] = set()
        self._cancelled: dict[int, EdgeKVError] = {}  # why an operation was cancelled
        self._outstanding = 0
        self._drained: asyncio.Future[None] | None = None

    async def run(self, requests: AsyncIterator[kv_pb2.StreamRequest]) -> None:
        limit = self._ops._max_inflight
        next_of = self._ops._drain.next
        try:
            while True:
                try:
                    request = await next_of(requests)
                except StopAsyncIteration:
                    break
                except Unavailable:  # the node is stopping: answer what runs, then end
                    await self._answered()
                    raise
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
                if request_id in self._running:
                    raise InvalidArgument(
                        f"stream request id {request_id} is already in flight on this stream; "
                        "ids must be unique among the operations in flight"
                    )
                if self._outstanding >= limit:
                    await self._answer(error_response(request_id, ResourceExhausted(
                        f"this stream has {self._outstanding} operations in flight; the limit "
                        f"is {limit} (max_stream_inflight)"
                    )))  # fmt: skip
                    continue
                self._start(request_id, kind, getattr(request, kind), request.timeout_ms)
            await self._answered()  # half-closed: answer what is still running
        finally:
            for task in list(self._running.values()):
                task.cancel()

    async def _answered(self) -> None:
        """Wait until every operation started is answered."""
        while self._outstanding:
            self._drained = self._loop.create_future()
            await self._drained

    def _start(self, request_id: int, kind: str, op: Any, timeout_ms: int) -> None:
        # A Call of its own: the request layer sets its read level and session token on
        # it (kv_messages.py), which must not leak into the stream's other operations.
        base = self._call
        call = Call(base.principal, base.credentials, base.forwarded_by, base.time_remaining)
        timer = None
        if timeout_ms:
            loop = self._loop
            deadline = loop.time() + timeout_ms / 1000.0
            call = Call(
                call.principal, call.credentials, call.forwarded_by,
                lambda: deadline - loop.time(),
            )  # fmt: skip
            timer = loop.call_at(deadline, self._cancel, request_id, DeadlineExceeded(
                f"operation {request_id} did not finish within its {timeout_ms} ms (timeout_ms)"
            ))  # fmt: skip
        self._outstanding += 1
        self._unstarted.add(request_id)
        self._running[request_id] = self._loop.create_task(
            self._run_op(request_id, kind, op, call, timer)
        )

    def _cancel(self, request_id: int, why: EdgeKVError) -> None:
        task = self._running.get(request_id)
        if task is not None and request_id not in self._cancelled:
            self._cancelled[request_id] = why
            if request_id not in self._unstarted:
                task.cancel()

    async def _run_op(
        self,
        request_id: int,
        kind: str,
        op: Any,
        call: Call,
        timer: asyncio.TimerHandle | None,
    ) -> None:
        started = time.perf_counter()
        code = _OK
        self._unstarted.discard(request_id)
        try:
            try:
                if self._cancelled and request_id in self._cancelled:
                    raise asyncio.CancelledError  # cancelled before it ran
                answer = _ANSWER[kind](request_id, await self._ops._ops[kind](op, call))
            except asyncio.CancelledError:
                why = self._cancelled.pop(request_id, None)
                if why is None:
                    raise  # the stream is ending
                answer, code = error_response(request_id, why), grpc_code_for(why).name
            except EdgeKVError as exc:
                answer, code = error_response(request_id, exc), grpc_code_for(exc).name
            except Exception as exc:  # a bug: this operation fails, the stream goes on
                log.exception("KV.Stream operation %s (%s) failed", request_id, kind)
                unknown = OtherStatus(f"unexpected error: {exc!r}", grpc.StatusCode.UNKNOWN)
                answer, code = error_response(request_id, unknown), "UNKNOWN"
            finally:
                del self._running[request_id]
                if timer is not None:
                    timer.cancel()
                if self._cancelled:  # a cancel that came too late to matter
                    self._cancelled.pop(request_id, None)
            recorder = self._ops._recorder
            if recorder is not None:
                recorder.record(METHOD_OF_OP[kind], code, time.perf_counter() - started)
            await self._answer(answer)
        finally:
            self._outstanding -= 1
            drained = self._drained
            if not self._outstanding and drained is not None and not drained.done():
                drained.set_result(None)

    async def _answer(self, answer: kv_pb2.StreamResponse) -> None:
        """Write one answer; one writer at a time, waiting for flow control."""
        async with self._lock:
            await self._context.write(answer)


__all__ = ["METHOD_OF_OP", "OperationRecorder", "StreamOps", "error_response"]
