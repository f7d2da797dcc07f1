"""The streamed transport of the SDK: point operations multiplexed over one KV.Stream per node.

``Client`` and ``AsyncClient`` send get, put, delete, get_many and write either
as unary calls or, with ``transport="stream"``, as operations of one long-lived
bidi stream per node (``KV.Stream``): a client-chosen id per operation, its
deadline in ``timeout_ms``, answers matched by id in any order. An operation
hands the client exactly what the unary call would: the same response message,
or a ``grpc.RpcError`` (:class:`StreamRpcError`) with the same code, details and
trailing metadata, so the clients' retry and failover rules (``_base.py``,
``retry.py``) and the error mapping (``_codec.error_from_rpc``) apply unchanged:

* an operation that failed on the node fails with the node's status;
* a stream that breaks fails every operation in flight with the stream's
  status, and the next operation opens a new stream (reconnection). Sent
  operations may have been applied: reads are retried by the policy; a write
  moves to another node only when it was never sent: the stream never
  connected ("failed to connect to all addresses"), or it ended before the
  write was written to it (``unsent_error``; both ``errors.never_sent``);
* a deadline that passes fails the operation with DEADLINE_EXCEEDED and tells
  the node to cancel it; so does cancelling the coroutine that awaits it
  (asyncio), and the stream goes on (the blocking client bounds the wait of the
  caller that reads the stream otherwise: ``_stream_sync.py``);
* a node without KV.Stream (UNIMPLEMENTED: an older node) is served by unary
  calls from then on; one that refuses the stream (over its per-client stream
  limit) for ``REFUSED_RETRY_S``, and what was sent on the refused stream, which
  never ran, is sent again at once as unary calls (``StreamRefused``).

:class:`AsyncOpStream` (grpc.aio) keeps one reader task per stream; a caller
starts the write of its request itself when no write is in flight, without
awaiting it (edgekv/eager.py), so cancelling a caller cannot cancel the
stream. ``SyncOpStream`` (grpc's blocking stack, ``_stream_sync.py``) has
grpc's request-consuming thread, and its callers read the stream themselves,
one at a time (leader/follower).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import grpc

from edgekv import eager
from edgekv.client._deadlines import Deadlines
from edgekv.errors import NOT_SENT_ON_STREAM, never_sent
from edgekv.v1 import kv_pb2

# Unary method -> the StreamRequest/StreamResponse oneof field that carries it.
STREAMED_METHODS = {
    "Get": "get",
    "Put": "put",
    "Delete": "delete",
    "BatchGet": "batch_get",
    "Write": "write",
}
TRANSPORTS = ("unary", "stream")
_StreamRequest = kv_pb2.StreamRequest
_MAX_TIMEOUT_MS = (1 << 32) - 1
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class StreamRpcError(grpc.RpcError):
    """An operation of a KV.Stream that failed: what the unary call would have raised.

    Has the methods of a gRPC call's error that the SDK reads: ``code()``,
    ``details()``, ``trailing_metadata()``, ``initial_metadata()``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self._trailing = trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()


def check_transport(transport: object) -> str:
    """``transport`` if it is "unary" or "stream"; ValueError naming the choices if not."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport is {transport!r}; it must be one of {', '.join(TRANSPORTS)}")
    return str(transport)


def timeout_ms_of(timeout: float | None) -> int:
    """The StreamRequest.timeout_ms of a deadline ``timeout`` seconds away (0: none)."""
    if timeout is None:
        return 0
    return min(_MAX_TIMEOUT_MS, max(1, math.ceil(timeout * 1000.0)))


def request_of(kind: str, request_id: int, request: Any, timeout_ms: int) -> Any:
    """The StreamRequest carrying ``request`` (the unary request message) as ``kind``."""
    out = _StreamRequest(id=request_id, timeout_ms=timeout_ms)
    getattr(out, kind).CopyFrom(request)
    return out


def result_of(response: kv_pb2.StreamResponse) -> Any:
    """The unary response message in ``response``; raises its StreamError as StreamRpcError."""
    which = response.WhichOneof("result")
    if which == "error":
        error = response.error
        code = _CODES.get(error.code, grpc.StatusCode.UNKNOWN)
        raise StreamRpcError(code, error.message, tuple(error.metadata.items()))
    if which is None:
        raise StreamRpcError(
            grpc.StatusCode.INTERNAL, f"stream answer id {response.id} carries no result"
        )
    return getattr(response, which)


def broken_error(exc: BaseException | None) -> grpc.RpcError:
    """The error every operation in flight fails with when their stream ended."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc
    if exc is None:
        return StreamRpcError(
            grpc.StatusCode.UNAVAILABLE, "the node ended the stream (it is shutting down?)"
        )
    return StreamRpcError(grpc.StatusCode.UNAVAILABLE, f"the stream failed: {exc!r}")


class StreamNotSent(StreamRpcError):
    """The stream ended (UNAVAILABLE) before this operation was written to it, so it
    is sent again at once on a new stream, writes too, as grpc retries a unary call
    it had not sent (client/_base.py); if that fails so too, it is a call that never
    connected (``errors.never_sent``): reads back off, a write moves on."""


def unsent_error(error: grpc.RpcError) -> grpc.RpcError:
    """What an operation fails with when its stream ended with ``error`` before the
    operation was written to it: a StreamNotSent for UNAVAILABLE, whose words
    ``errors.never_sent`` knows. Unchanged: another status (the client closed it;
    a refused stream's operations are sent again anyway), and a stream that never
    connected (never_sent already: no retry at once, the policy's back-off)."""
    code, details = error.code(), error.details()
    if code != _UNAVAILABLE or isinstance(error, StreamRefused) or never_sent(code, details):
        return error
    trailing = getattr(error, "trailing_metadata", None)  # not every grpc.RpcError has it
    metadata = (trailing() if trailing is not None else None) or ()
    return StreamNotSent(_UNAVAILABLE, f"{details} ({NOT_SENT_ON_STREAM})", metadata)


def expired_error(timeout: float | None) -> StreamRpcError:
    """What an operation whose deadline passed before its answer fails with."""
    return StreamRpcError(_DEADLINE, f"Deadline Exceeded (the operation's {timeout} s ran out)")


class _Yield:
    """Awaiting it gives the event loop one turn (asyncio.sleep(0) without its frame)."""

    __slots__ = ()

    def __await__(self) -> Any:
        yield


_CALLER_FIRST = _Yield()


class StreamRefused(StreamRpcError):
    """The node refused to open the stream (its per-client stream limit): the
    operations sent on it never ran, and the client sends them again at once, as
    unary calls (client/_base.py), for ``REFUSED_RETRY_S`` before it tries a stream
    again. Without this, the 65th client process on a host would fail every call."""


# How long a client calls a node unary after the node refused its stream.
REFUSED_RETRY_S = 60.0


def refused(error: grpc.RpcError) -> bool:
    """Whether a stream ended because the node would not open it for this client
    (server/interceptors.py: over ``max_streams_per_client``)."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        "(max_streams_per_client)" in (error.details() or "")
    )


class StreamMethods:
    """``method(name)``: the callable a client uses in place of the unary stub method
    ``name`` (``rpc(request, timeout=, metadata=)``), one per method, sending it as an
    operation of this stream through ``self.call(kind, ...)``. ``unsupported``: use
    unary calls instead (for good: a node without KV.Stream; for a while: one that
    refused this client's stream, see ``stream_again``)."""

    call: Callable[..., Any]

    def __init__(self) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        self.unsupported = False
        self._unary_until = 0.0  # refused: unary calls until this monotonic time

    def stream_again(self) -> bool:
        """Whether it is time to try a stream again after a refusal (then it is tried)."""
        if self._unary_until and time.monotonic() >= self._unary_until:
            self.unsupported, self._unary_until = False, 0.0
            return True
        return False

    def ended(self, error: grpc.RpcError) -> grpc.RpcError:
        """What the operations in flight fail with when the stream ended with ``error``;
        notes a node without KV.Stream, or one that refused it."""
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            self.unsupported = True
        elif refused(error):
            self.unsupported = True
            self._unary_until = time.monotonic() + REFUSED_RETRY_S
            return StreamRefused(
                grpc.StatusCode.UNAVAILABLE,
                f"the node refused the stream, so this client calls it unary for "
                f"{REFUSED_RETRY_S:.0f} s: {error.details()}",
            )
        return error

    def method(self, name: str) -> Callable[..., Any]:
        rpc = self._methods.get(name)
        if rpc is None:
            rpc = self._methods[name] = functools.partial(self.call, STREAMED_METHODS[name])
        return rpc


class AsyncOpStream(StreamMethods):
    """One KV.Stream to one node, shared by the coroutines of one AsyncClient.

    Opened on the first operation and again after it broke; bound to the event
    loop it was first used on. ``method(name)`` gives a callable with the
    signature of the unary stub method (``rpc(request, timeout=, metadata=)``).
    """

    def __init__(self, stub: Any, metadata: Any) -> None:
        super().__init__()
        self._stub = stub
        self._metadata = metadata
        self._call: Any = None  # the grpc.aio StreamStreamCall while open
        self._writer: _Writer | None = None  # writes on _call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._deadlines = Deadlines(self._expire)  # one timer for the operations' deadlines
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._timeout: float | None = None  # the last operation's, as timeout_ms_of made it
        self._timeout_ms = 0
        self.closed = False

    async def call(
        self, kind: str, request: Any, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        """Send ``request`` as a ``kind`` operation and wait for its answer (or raise)."""
        writer = self._writer
        if writer is None:
            writer = self._open()
        loop = self._loop
        assert loop is not None
        request_id = next(self._ids)
        if timeout != self._timeout:  # nearly always the client's default: converted once
            self._timeout, self._timeout_ms = timeout, timeout_ms_of(timeout)
        writer.send(request_of(kind, request_id, request, self._timeout_ms))
        # Its answer cannot be read before this step ends: what only waiting needs
        # comes after the write started.
        answer = loop.create_future()
        self._pending[request_id] = answer
        if timeout is not None:
            self._deadlines.add(request_id, loop.time() + timeout)
        try:
            response = await answer
        except asyncio.CancelledError:
            if self._pending.pop(request_id, None) is not None:  # still running: tell the node
                self._send(_StreamRequest(id=next(self._ids), cancel=request_id))
            raise
        finally:
            if timeout is not None:
                self._deadlines.discard(request_id)
        return result_of(response)

    def _expire(self, request_id: int) -> None:
        answer = self._pending.pop(request_id, None)
        if answer is not None and not answer.done():
            answer.set_exception(StreamRpcError(_DEADLINE, "Deadline Exceeded"))
            self._send(_StreamRequest(id=next(self._ids), cancel=request_id))

    def _send(self, request: Any) -> None:
        if self._writer is not None:
            self._writer.send(request)

    def _open(self) -> _Writer:
        if self.closed:
            raise StreamRpcError(grpc.StatusCode.CANCELLED, "the client is closed")
        call = self._stub.Stream(metadata=self._metadata)
        loop = self._loop = asyncio.get_running_loop()
        self._deadlines.loop = loop
        self._call = call
        self._writer = _Writer(call, loop)
        self._tasks = [loop.create_task(self._run_reader(call, self._writer))]
        return self._writer

    async def _run_reader(self, call: Any, writer: _Writer) -> None:
        pending = self._pending
        failure: BaseException | None = None
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                answer = pending.pop(response.id, None)
                if answer is not None and not answer.done():
                    answer.set_result(response)
                    # Let its caller resume first: starting grpc's next read (a core batch)
                    # before it ran put ~15 us on every streamed call's latency.
                    await _CALLER_FIRST
        except grpc.RpcError as exc:
            failure = exc
        except asyncio.CancelledError:
            failure = StreamRpcError(grpc.StatusCode.CANCELLED, "the client is closed")
        except Exception as exc:  # a response that does not parse, a bug: end this stream
            failure = exc
            call.cancel()
        error = broken_error(failure)
        if writer.failed and error.code() == grpc.StatusCode.INTERNAL:
            # A request written on a stream that had just ended (its status not read
            # yet) fails in grpc's core, and grpc reports the call INTERNAL: it ended.
            error = StreamRpcError(
                grpc.StatusCode.UNAVAILABLE, f"the stream ended: {error.details()}"
            )
        self._broken(call, error)

    def _broken(self, call: Any, error: grpc.RpcError) -> None:
        """The stream ``call`` ended: fail what was in flight; the next operation reopens."""
        if self._call is not call:
            return
        self._call = None
        error = self.ended(error)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._tasks = []
        unsent: set[int] = set()
        if self._writer is not None:
            self._writer.stop()
            unsent = self._writer.unsent
            self._writer = None
        pending, self._pending = self._pending, {}
        for request_id, answer in pending.items():
            if not answer.done():
                answer.set_exception(unsent_error(error) if request_id in unsent else error)
        self._deadlines.clear()

    async def close(self) -> None:
        """Cancel the stream; operations in flight fail with CANCELLED. Idempotent."""
        self.closed = True
        call, tasks = self._call, self._tasks
        if call is not None:
            call.cancel()
            self._broken(call, StreamRpcError(grpc.StatusCode.CANCELLED, "the client is closed"))
            await asyncio.gather(*tasks, return_exceptions=True)


class _Writer:
    """Writes the requests of one grpc.aio stream, one at a time, in order.

    A request is written at once, from the caller's own step, when no write is
    in flight, else once those before it are written. A write runs without a
    task (eager.drive): no caller awaits it, so a caller that is cancelled
    cannot cancel grpc's write (which would cancel the whole call), and no
    writer task has to be woken first.
    """

    __slots__ = ("_busy", "_call", "_loop", "_on_written", "_outbox", "_stopped", "_writing",
                 "failed", "unsent")  # fmt: skip

    def __init__(self, call: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._call = call
        self._loop = loop
        self._outbox: collections.deque[Any] = collections.deque()
        self._busy = False  # a write is in flight
        self._writing = 0  # the id of the request being written
        self._stopped = False  # the stream ended: drop what is left
        self.failed = False  # a write failed: the call had ended
        # Ids of the requests that never went out: left in the outbox, sent after the
        # stop, or whose write failed (grpc fails a write before it sends it whole).
        self.unsent: set[int] = set()
        self._on_written = self._written

    def send(self, request: Any) -> None:
        if self._stopped:
            self.unsent.add(request.id)
        elif self._busy:
            self._outbox.append(request)
        else:
            self._busy = True
            self._writing = request.id
            eager.drive(self._call.write(request), self._on_written, self._loop)

    def _written(self, failure: BaseException | None) -> None:
        # A failed write means the call ended: its reader fails what was in flight.
        if failure is None and self._outbox and not self._stopped:
            request = self._outbox.popleft()
            self._writing = request.id
            eager.drive(self._call.write(request), self._on_written, self._loop)
        else:
            self._busy = False
            if failure is not None:
                self.failed = True
                self.unsent.add(self._writing)
                self.stop()

    def stop(self) -> None:
        self._stopped = True
        self.unsent.update(request.id for request in self._outbox)
        self._outbox.clear()


__all__ = [
    "STREAMED_METHODS",
    "TRANSPORTS",
    "AsyncOpStream",
    "StreamMethods",
    "StreamNotSent",
    "StreamRefused",
    "StreamRpcError",
    "check_transport",
    "timeout_ms_of",
    "unsent_error",
]
