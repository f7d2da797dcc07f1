"""The blocking Client's KV.Stream: each caller reads the stream itself (leader/follower).

:class:`SyncOpStream` keeps every rule of the streamed transport (module
docstring of ``_stream.py``) on grpc's blocking stack without a reader thread
of its own. grpc sends the requests from its own thread, consuming an iterator
over a queue; the answers are read by the callers: a caller whose operation is
sent while no one reads the stream becomes its *reader*: it calls
``next(call)`` itself and hands each answer to the caller it belongs to, until
its own answer comes; then it gives the role to the oldest caller still waiting
(woken: "your turn") and returns. A lone caller thus reads its own answer as a
bare bidi ping-pong does, with no thread hand-off (before: grpc's thread, then
our reader thread, then the caller: one more wake-up and GIL hand-off per
operation; bench/e2e/stream_ab.py measured the multiplexer at x1.10-1.19 the
bare ping-pong's p50 then, x1.05-1.12 now).

Deadlines. A caller that waits for its answer waits on its own lock, with its
deadline. The reader cannot leave ``next()`` before something arrives, and grpc
has no per-message timeout; the node answers an expired operation itself
(DEADLINE_EXCEEDED at its ``timeout_ms``), so normally an answer comes. For a
node that does not answer (hung, black-holed), one watchdog thread per stream,
started on the first reader with a deadline and ended when idle, sleeps until
the current reader's deadline. Then it fails the reader's operation with
DEADLINE_EXCEEDED (and sends the node a ``cancel``); if it was the only
operation in flight, it cancels the stream (the next operation opens a new one
on the same channel, which is cheap), so the caller returns on time; if others
are in flight, the reader leaves with the next answer on the stream, and after
``SILENCE_S`` with no answer at all the node is taken for gone: the stream is
cancelled and the operations in flight fail UNAVAILABLE, as when a stream
breaks (reads are retried by the policy). So a caller waits at most
``SILENCE_S`` past its deadline, and only when its node stopped answering.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from edgekv.client._stream import (
    StreamMethods,
    StreamRpcError,
    broken_error,
    expired_error,
    request_of,
    result_of,
    timeout_ms_of,
    unsent_error,
)
from edgekv.v1 import kv_pb2

# After a reader's deadline, how long a stream with other operations in flight
# may stay silent before the node is taken for gone. A live node answers the
# expired operation itself about one round trip after its deadline.
SILENCE_S = 0.5
# A watchdog with no reader to watch for this long ends; the next reader with a
# deadline starts another.
_IDLE_S = 30.0
_StreamRequest = kv_pb2.StreamRequest


class _Op:
    """One operation in flight and its caller; fields guarded by the stream's lock."""

    __slots__ = ("deadline", "id", "outcome", "timeout", "turn", "wake_lock")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.id = 0
        self.outcome: Any = None  # the StreamResponse, or the exception to raise; set once
        self.turn = False  # handed the reader role while it waited
        self.wake_lock: threading.Lock | None = None  # held; released once to wake the caller

    def wait_lock(self) -> threading.Lock:
        lock = self.wake_lock = threading.Lock()
        lock.acquire()
        return lock

    def wake(self) -> None:
        lock, self.wake_lock = self.wake_lock, None
        if lock is not None:
            lock.release()

    def fail(self, error: BaseException) -> None:
        if self.outcome is None:
            self.outcome = error
        self.wake()

    def result(self) -> Any:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return result_of(outcome)


class SyncOpStream(StreamMethods):
    """One KV.Stream to one node, shared by the threads of one Client. Thread-safe.

    ``method(name)`` gives a callable with the signature of the unary stub
    method. A caller blocks until its answer, its deadline (DEADLINE_EXCEEDED,
    and a ``cancel`` to the node), the stream's end (every operation in flight
    fails with the stream's status; the next one reopens) or ``close()``.
    """

    def __init__(self, stub: Any, metadata: Any) -> None:
        super().__init__()
        self._stub = stub
        self._metadata = metadata
        self._lock = threading.Lock()  # guards every field below but _stub, _metadata, _ids
        self._call: Any = None  # grpc's response iterator (a Call) while open
        self._outbox: queue.SimpleQueue[Any] | None = None  # feeds grpc's request thread
        self._pending: dict[int, _Op] = {}  # the operations of _call, by id
        self._reader: _Op | None = None  # the op whose caller reads _call (or was handed it)
        self._heard_at = 0.0  # monotonic time of the last answer read
        self._watch = threading.Condition(self._lock)  # wakes the watchdog
        self._watch_at = -math.inf  # when the watchdog wakes next; -inf: no watchdog
        self._ids = itertools.count(1)
        self.closed = False

    def call(
        self, kind: str, request: Any, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        """Send ``request`` as a ``kind`` operation and block for its answer (or raise)."""
        op = _Op(timeout)
        op.id = next(self._ids)
        stream_request = request_of(kind, op.id, request, timeout_ms_of(timeout))
        wait: threading.Lock | None = None
        with self._lock:
            if self._call is not None and not self._call.is_active() and self._reader is None:
                # It ended while no one read it (the node stopped and ended its idle
                # streams): what is put on it now would never be sent. A new one.
                self._broken(broken_error(self._call))
            if self._outbox is None:
                self._open()
            call, outbox = self._call, self._outbox
            assert outbox is not None
            self._pending[op.id] = op
            # Queued under the lock: _broken takes what grpc has not, as never sent.
            outbox.put(stream_request)
            if self._reader is None:
                self._lead(op)
            else:
                wait = op.wait_lock()
        if wait is None or self._follow(op, wait):
            self._read(call, op)
        return op.result()

    def _open(self) -> None:
        if self.closed:
            raise StreamRpcError(grpc.StatusCode.CANCELLED, "the client is closed")
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = self._stub.Stream(_drain(outbox), metadata=self._metadata)
        self._outbox = outbox

    def _lead(self, op: _Op) -> None:
        """Make ``op``'s caller the reader (under the lock); wake the watchdog if it
        sleeps past ``op``'s deadline, start it if there is none."""
        self._reader = op
        if op.deadline is not None and op.deadline < self._watch_at:
            self._watch.notify()
        elif op.deadline is not None and self._watch_at == -math.inf:
            self._watch_at = op.deadline
            threading.Thread(target=self._run_watchdog, name="edgekv-stream-watchdog",
                             daemon=True).start()  # fmt: skip

    def _pass_on(self) -> None:
        """The reader is done (under the lock): hand the role to the oldest waiting op."""
        for op in self._pending.values():
            op.turn = True
            op.wake()
            self._lead(op)
            return
        self._reader = None

    def _follow(self, op: _Op, wait: threading.Lock) -> bool:
        """Wait for ``op``'s answer or the reader role; True: read now."""
        try:
            if op.deadline is None:
                woken = wait.acquire()
            else:
                woken = wait.acquire(timeout=max(0.0, op.deadline - time.monotonic()))
        except BaseException:  # KeyboardInterrupt: leave, and pass the role on
            with self._lock:
                self._expire(op, StreamRpcError(grpc.StatusCode.CANCELLED, "interrupted"))
            raise
        if woken and not op.turn:  # answered (or failed): set before the wake, read alone
            return False
        with self._lock:
            op.wake_lock = None
            if op.outcome is None:
                if op.turn and (op.deadline is None or time.monotonic() < op.deadline):
                    return True
                self._expire(op, expired_error(op.timeout))
            elif self._reader is op:  # handed the role, then failed by the watchdog
                self._pass_on()
        return False

    def _expire(self, op: _Op, error: StreamRpcError) -> None:
        """Fail ``op`` if it is still in flight (under the lock) and tell the node."""
        if self._pending.pop(op.id, None) is not None and self._outbox is not None:
            self._outbox.put(_StreamRequest(id=next(self._ids), cancel=op.id))
        op.fail(error)
        if self._reader is op:
            self._pass_on()
        elif not self._pending and self._reader is not None and self._reader.outcome is not None:
            self._watch.notify()  # the reader, past its deadline, is alone now: free it

    def _read(self, call: Any, op: _Op) -> None:
        """Read ``call``'s answers, completing each caller's op, until ``op`` has its own."""
        failure: BaseException | None = None
        try:
            while True:
                response = next(call)
                with self._lock:
                    if self._call is call:
                        self._heard_at = time.monotonic()
                        answered = self._pending.pop(response.id, None)
                        if answered is not None:
                            answered.outcome = response
                            answered.wake()
                    if op.outcome is not None:
                        if self._reader is op:
                            self._pass_on()
                        return
        except StopIteration:
            pass
        except grpc.RpcError as exc:
            failure = exc
        except BaseException as exc:  # a bug, or KeyboardInterrupt: end this stream
            failure = exc
            call.cancel()
        with self._lock:
            if self._call is call:
                self._broken(broken_error(failure))
            op.fail(broken_error(failure))  # already failed, but for a bug: never unanswered
        if failure is not None and not isinstance(failure, Exception):
            raise failure

    def _broken(self, error: grpc.RpcError) -> None:
        """The current stream ended (under the lock): fail what was in flight; what
        grpc's request thread had not taken from the outbox was never sent."""
        outbox = self._outbox
        self._call = self._outbox = self._reader = None
        error = self.ended(error)
        unsent: set[int] = set()
        if outbox is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    unsent.add(outbox.get_nowait().id)
            outbox.put(None)  # ends grpc's request thread
        pending, self._pending = self._pending, {}
        for op in pending.values():
            op.fail(unsent_error(error) if op.id in unsent else error)

    def _run_watchdog(self) -> None:
        """Bound the reader's wait: see the module docstring. One per stream."""
        with self._lock:
            while not self.closed:
                op, now = self._reader, time.monotonic()
                if op is None or op.deadline is None:
                    self._watch_at = math.inf
                    if not self._watch.wait(_IDLE_S) and self._reader is None:
                        break
                    continue
                if now < op.deadline:
                    self._watch_at = op.deadline
                    self._watch.wait(op.deadline - now)
                    continue
                self._expire_reader(op, now)
            self._watch_at = -math.inf

    def _expire_reader(self, op: _Op, now: float) -> None:
        """The reader's deadline passed (under the lock, in the watchdog)."""
        if op.outcome is None:
            self._pending.pop(op.id, None)
            op.fail(expired_error(op.timeout))
            if self._pending and self._outbox is not None:
                self._outbox.put(_StreamRequest(id=next(self._ids), cancel=op.id))
        silent_until = max(op.deadline or now, self._heard_at) + SILENCE_S
        if self._pending and now < silent_until:
            self._watch_at = silent_until  # the next answer on the stream frees the reader
            self._watch.wait(silent_until - now)
            return
        call = self._call
        if self._pending:
            error = StreamRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"no answer on the stream for {SILENCE_S} s after operation {op.id}'s "
                "deadline passed: the node is not answering",
            )
        else:  # only the reader was in flight: cancel the stream so its caller returns
            error = expired_error(op.timeout)
        self._broken(error)
        call.cancel()

    def close(self) -> None:
        """Cancel the stream; operations in flight fail with CANCELLED. Idempotent."""
        with self._lock:
            self.closed = True
            call = self._call
            if call is not None:
                self._broken(StreamRpcError(grpc.StatusCode.CANCELLED, "the client is closed"))
            self._watch.notify()
        if call is not None:
            call.cancel()


def _drain(outbox: queue.SimpleQueue[Any]) -> Iterator[Any]:
    """The requests of one stream, until its end marker (None)."""
    while True:
        request = outbox.get()
        if request is None:
            return
        yield request


__all__ = ["SILENCE_S", "SyncOpStream"]
