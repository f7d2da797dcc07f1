"""Connect unary KV calls answered straight from the connection, without an ASGI call.

A Connect unary KV call (``POST /edgekv.v1.KV/<Method>``) whose request came
whole in one network read is, on the uvicorn door, most of the door's traffic.
Through ASGI it costs, besides the call itself: a coroutine for uvicorn's
``run_asgi``, the HttpApp wrapper and its ``send`` closure, a ``receive`` and
two ``send`` messages (dicts), uvicorn's header checks and encoding, and a
loop turn before the coalesced write (coalesce.py). :class:`DirectUnary` does
the same protocol step for exactly that case from the connection
(guard.py): it decodes, calls and encodes with :class:`ConnectUnary`'s one
implementation (unary.py, the same code the ASGI path runs), and writes status
line, headers and body in one ``transport.write``, with what HttpApp adds to
every answer (``Server-Timing: total``, the metrics recorder's route, status
and latency) and what uvicorn adds (its default headers, ``connection: close``
when the connection does not stay open), then completes uvicorn's request cycle
as its ``send`` would (keep-alive timer, the next pipelined request).

Anything else takes the ASGI path: a body still arriving, ``Expect:
100-continue``, a paused writer, an access log, an application that is not the
door's own (CORS wraps it: :func:`edgekv.http.app.with_cors`), and every call
:meth:`ConnectUnary.prepare` leaves to connectrpc. Event-loop thread only.
"""

from __future__ import annotations

import time
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from edgekv import eager
from edgekv.http.app import Scope, total_timing
from edgekv.http.unary import Answer, ConnectUnary, UnaryRequest
from edgekv.metrics import HttpRecorder

# What uvicorn answers when the application fails before its answer started.
_FAILED = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
    b"connection: close\r\n\r\nInternal Server Error"
)


class DirectUnary:
    """Answers the door's Connect unary KV calls from the connection; one per node.

    ``unary`` and ``recorder`` are the very objects the door's HttpApp uses, so
    a call answered here is served, counted and timed as the ASGI path would.
    """

    __slots__ = ("_recorder", "_unary")

    def __init__(self, unary: ConnectUnary, recorder: HttpRecorder) -> None:
        self._unary = unary
        self._recorder = recorder

    def start(self, conn: HttpToolsProtocol, cycle: RequestResponseCycle) -> bool:
        """Answer ``cycle``'s request, now or (when the call waits) from a task in
        ``conn.tasks``; False, untouched, when it must take the ASGI path."""
        if (
            cycle.more_body  # its body is still arriving
            or cycle.waiting_for_100_continue
            or cycle.access_log
            or conn.flow.write_paused
        ):
            return False
        call = self._unary.prepare(cast(Scope, cycle.scope))
        if call is None:
            return False
        body = bytes(cycle.body)
        cycle.body = bytearray()
        _, task = eager.start(self._run(conn, cycle, call, body), conn.loop)
        if task is not None:  # uvicorn's shutdown waits for the calls in conn.tasks
            task.add_done_callback(conn.tasks.discard)
            conn.tasks.add(task)
        return True

    async def _run(
        self, conn: HttpToolsProtocol, cycle: RequestResponseCycle, call: UnaryRequest, body: bytes
    ) -> None:
        started = time.perf_counter()
        path = cycle.scope["path"]
        try:
            answer: Answer = await self._unary.answer(call, body, cycle.scope["client"])
        except BaseException as exc:  # as uvicorn's run_asgi: logged, answered 500, closed
            self._recorder.record(path, 500, time.perf_counter() - started)
            conn.logger.error("Exception in ASGI application\n", exc_info=exc)
            _complete(conn, cycle, _head(conn, 500) + _FAILED, keep_alive=False)
            return
        status, headers, payload = answer
        head = _head(conn, status)
        try:
            for name, value in headers:
                if HEADER_RE.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                if HEADER_VALUE_RE.search(value):
                    raise RuntimeError("Invalid HTTP header value.")
                head += name.lower() + b": " + value + b"\r\n"
        except RuntimeError as exc:  # as uvicorn's send would: logged, connection closed
            self._recorder.record(path, status, time.perf_counter() - started)
            conn.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not cycle.disconnected:
                cycle.response_started = True
                conn.transport.close()
            return
        name, value = total_timing(started)
        head += name + b": " + value + b"\r\n"
        keep_alive = cycle.keep_alive
        if not keep_alive:
            head += b"connection: close\r\n"
        _complete(conn, cycle, head + b"\r\n" + payload, keep_alive)
        self._recorder.record(path, status, time.perf_counter() - started)


def _head(conn: HttpToolsProtocol, status: int) -> bytes:
    """The status line and uvicorn's default headers (the date)."""
    head = STATUS_LINE[status]
    for name, value in conn.server_state.default_headers:
        head += name + b": " + value + b"\r\n"
    return head


def _complete(
    conn: HttpToolsProtocol, cycle: RequestResponseCycle, response: bytes, keep_alive: bool
) -> None:
    """Write the whole response and end the cycle as uvicorn's ``send`` does."""
    if cycle.disconnected:  # the client went away meanwhile: nothing to write to
        return
    cycle.response_started = True
    cycle.response_complete = True
    transport: Any = conn.transport  # the door's CoalescingTransport
    transport.write_now(response)
    cycle.message_event.set()
    if not keep_alive:
        transport.close()
    cycle.on_response()


__all__ = ["DirectUnary"]
