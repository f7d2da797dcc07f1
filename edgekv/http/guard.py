"""The HTTP/1.1 connection of the door: uvicorn's httptools protocol with bounds on reading.

uvicorn with httptools reads a request head of any size (the URL and header
lines are kept in memory until the head ends) and waits for it, and for the
body, without a deadline: one client sending an endless header, or a byte now
and then (slowloris), holds memory and a socket for ever, and a slow body holds
its call's admission slot. :func:`guarded_protocol` adds, per connection:

- ``http.max_header_bytes``: a request head (request line and header lines)
  larger than this is answered 431 and the connection closed, counted as it
  arrives, so at most about one network read more is ever held;
- ``http.request_timeout_s``: a request must arrive whole (head and body) this
  long after its first byte: otherwise 408 (head incomplete) or the connection
  is closed (body incomplete: the call sees the client go away). The timer is
  set only when a read ends with a request still arriving, so a request that
  comes whole in one read (most) costs no timer;
- a new connection that sends nothing is closed after the keep-alive timeout,
  like a connection idle between requests.

Answers of the door itself (time from the end of the request) are not bounded
here: those are the calls' deadlines. Runs on the node's event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgekv import eager
from edgekv.config.model import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    HttpSettings,
)
from edgekv.http.coalesce import CoalescingTransport
from edgekv.http.direct import DirectUnary

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# The bytes of a header line besides its name and value (": " and CRLF).
_LINE_BYTES = 4


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol with the bounds above; one per connection."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    # Calls answered in the step that read them (the door's Connect unary KV calls).
    eager_paths: frozenset[str] = frozenset()
    # Answers those that arrived whole without an ASGI call (direct.py); None: ASGI only.
    direct: DirectUnary | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte and the end of its head
        self._head_bytes = 0  # of the head being read: parsed lines, or whole reads
        self._raw_head_bytes = 0  # reads that fell entirely inside the head
        self._request_timer: asyncio.TimerHandle | None = None
        # loop.time() at the first byte of the request being read; None between requests.
        self._request_started: float | None = None
        self._refusing = False
        self._reading = False  # inside data_received: calls wait for the end of the read
        self._deferred: tuple[Any, Any] | None = None  # the call to answer after this read

    # -- connection --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # One write per answer (head and body), not one per ASGI message (coalesce.py).
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        # Until its first request a connection is idle: the keep-alive timeout applies.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        inside = self._in_head
        self._reading = True
        try:
            super().data_received(data)
        finally:
            self._reading = False
        if (
            self._request_started is not None
            and self._request_timer is None
            and not self.transport.is_closing()
        ):
            # A request is still arriving after this read: bound it now. A request
            # that came whole in one read (most) never needs a timer.
            left = self._request_started + self.request_timeout_s - self.loop.time()
            self._request_timer = self.loop.call_later(max(left, 0.0), self._on_timeout)
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self._answer_now(*deferred)
        if inside and self._in_head and not self._refusing:
            # This whole read was head bytes (a header line still incomplete
            # is held by the parser, unseen by the callbacks): count it too.
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self.max_header_bytes:
                self._refuse_head_size(self._raw_head_bytes)

    def send_400_response(self, msg: str) -> None:
        if not self._refusing:  # a head refused from a callback was answered there
            super().send_400_response(msg)

    # -- parser callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._raw_head_bytes = 0
        self._cancel_request_timer()
        self._request_started = self.loop.time()  # the timer starts at the end of this read

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + _LINE_BYTES)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_request_timer()
        self._request_started = None
        super().on_message_complete()

    # -- starting calls ------------------------------------------------------------

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn starts a task for the call when its head is parsed, though the
        # body of a small call came in the same read. A Connect unary call of KV
        # starts after this read instead, in this step (_answer_now).
        scope = cycle.scope
        if self._reading and scope["method"] == "POST" and scope["path"] in self.eager_paths:
            self._deferred = (cycle, app)
        else:
            super()._start_asgi_task(cycle, app)

    def _answer_now(self, cycle: Any, app: Any) -> None:
        """Run the call in this step; only a call that has to wait (its body is still
        arriving, it is forwarded or replicated) goes on in a task. A local read
        is answered with no task and no loop turn (edgekv/eager.py); a call whose
        request is whole here, with no ASGI call either (direct.py)."""
        if self.transport.is_closing():
            super()._start_asgi_task(cycle, app)
            return
        direct = self.direct
        if direct is not None and app is self.app and direct.start(self, cycle):
            return
        _, task = eager.start(cycle.run_asgi(app), self.loop)
        if task is not None:  # uvicorn's shutdown waits for the calls in self.tasks
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    # -- refusals ------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_header_bytes:
            self._refuse_head_size(self._head_bytes)
            raise _HeadTooLarge  # stops the parser; uvicorn's 400 is skipped (above)

    def _refuse_head_size(self, size: int) -> None:
        self._refuse(
            431,
            f"the request head is over {size} bytes; the limit is {self.max_header_bytes} "
            "(http.max_header_bytes)",
        )

    def _on_timeout(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(
                408,
                f"the request head did not arrive within {self.request_timeout_s:g} s "
                "(http.request_timeout_s)",
            )
        else:  # the body is late: the call in progress sees the client go away
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a Connect-style JSON error and close the connection."""
        self._refusing = True
        self._cancel_request_timer()
        code = "resource_exhausted" if status == 431 else "deadline_exceeded"
        body = json.dumps({"code": code, "message": message}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None


def guarded_protocol(
    settings: HttpSettings,
    eager_paths: frozenset[str] = frozenset(),
    direct: DirectUnary | None = None,
) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with ``settings``' bounds;
    calls to ``eager_paths`` are answered in the step that read them, by ``direct``
    (without an ASGI call) when it can."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "request_timeout_s": settings.request_timeout_s,
            "eager_paths": eager_paths,
            "direct": direct,
        },
    )


__all__ = ["GuardedProtocol", "guarded_protocol"]
