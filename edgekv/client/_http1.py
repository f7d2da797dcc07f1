"""Keep-alive HTTP/1.1 connections on asyncio, for the asyncio SDK's unary Connect calls.

Why hand-built on httptools (already the node's parser) rather than an HTTP
library: for one asyncio caller sending sequential Connect unary calls to a
node's door, the client CPU per call measured on this machine was 310-410 µs
through pyqwest (connectrpc's transport), 350-400 µs through aiohttp and
~255 µs through the blocking http.client, against ~100-140 µs for an asyncio
Protocol feeding ``httptools.HttpResponseParser`` (bench/e2e/http_client.py).
A unary call needs little of HTTP: one POST with a Content-Length body, one
response, keep-alive; this module does that and no more, with bounds.

``Http1Pool`` is one origin's pool (``http://host:port`` or ``https://``):

* one request in flight per connection (no pipelining); a connection goes back
  to the pool only after a complete response that allows keep-alive, and is
  reused newest first; at most ``MAX_IDLE`` wait, each for ``IDLE_EXPIRY_S``;
* a connection that timed out, was cancelled or lost mid-response, got a
  malformed, oversized or unfinished response, ``connection: close``, or bytes
  out of turn is closed and never reused;
* before an idle connection is reused it is checked for an end of stream the
  event loop has not processed yet (a non-blocking peek): a connection the
  server closed (its keep-alive timeout, a restart) is dropped before a byte
  of the request is written on it, and the call goes on a fresh one;
* a request already written is sent again only when ``resend_safe`` (a read)
  and the reused connection ended before any byte of an answer: the server
  may have closed it just as the request went out. A write is never sent
  twice: the caller gets UNAVAILABLE, its outcome unknown;
* bounds: a response head of at most ``MAX_HEAD_BYTES``, a body of at most
  ``read_max_bytes``, and the call's deadline over connecting, writing and
  reading.

Failures raise connectrpc's ``ConnectError`` with the code connectrpc's own
client gives the same failure: UNAVAILABLE when no connection could be made
(the message starts with ``NOT_CONNECTED``: the call never left) or the
connection failed or broke, DEADLINE_EXCEEDED when the deadline passed,
RESOURCE_EXHAUSTED for a response over a limit, CANCELED for a call in flight
when the pool is closed. Cancelling the calling task cancels the call
(CancelledError, as with grpc.aio). Not thread-safe: one event loop uses a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import urllib.request
from typing import cast
from urllib.parse import urlsplit

import httptools
from connectrpc.code import Code
from connectrpc.errors import ConnectError

MAX_HEAD_BYTES = 64 * 1024  # status line and header lines of one response
# Below the node's keep-alive (75 s) and common proxies' (60-75 s); a server that closes
# sooner (uvicorn's and Node's 5 s defaults) is caught by the peek before reuse.
IDLE_EXPIRY_S = 15.0
MAX_IDLE = 32  # idle connections kept per origin
# How a failure to make a connection starts its message (edgekv.errors.never_sent).
NOT_CONNECTED = "cannot connect over HTTP/1.1"
# How a response that is no HTTP/1.1 at all starts its message (client/_codec.py).
NOT_HTTP1 = "the answer is not HTTP/1.1"
# Peek at the socket without reading or blocking; 0 where the OS has no MSG_DONTWAIT.
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT if hasattr(socket, "MSG_DONTWAIT") else 0
# The first bytes of a TLS record (alert or handshake): a TLS port answered plain HTTP.
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")

# (status, content-type, content-encoding, body) of one response.
Response = tuple[int, bytes, bytes, bytes]


class _Failure(Exception):
    """Raised from a parser callback to stop parsing (the call's error is ``_failure``)."""


class _Stale(Exception):
    """The connection ended before any byte of an answer (the server may have closed it first)."""


class _NotSent(Exception):
    """The connection was found closed before a byte of the request was written on it."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses its response; owned by one pool."""

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._peek: socket.socket | None = None  # a duplicate of the socket, to peek at
        self._waiter: asyncio.Future[Response] | None = None  # set while a request waits
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._new_response()

    def _new_response(self) -> None:
        self._received = False  # any byte of this response yet
        self._raw_bytes = 0  # read while the head is incomplete
        self._head_bytes = 0  # of the header lines parsed
        self._head_done = False
        self._until_eof = False  # no length, not chunked: the body ends with the connection
        self._content_type = b""
        self._encoding = b""
        self._length = -1
        self._chunked = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._failure: ConnectError | None = None

    # -- the pool's side -----------------------------------------------------------

    def reusable(self, now: float) -> bool:
        """Whether this idle connection can carry a request now (nothing came in meanwhile)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        if now - self.idle_since > IDLE_EXPIRY_S:
            return False
        if self._peek is not None:
            try:
                self._peek.recv(1, _PEEK)  # b"": the server closed it; bytes: out of turn
            except BlockingIOError:
                return True
            except OSError:
                return False
            return False
        return True

    async def exchange(self, request: bytes, deadline: float | None) -> Response:
        """Write ``request`` and wait for its response; ends the connection on any failure."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.close()
            raise _NotSent
        loop = self._pool.loop
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self._new_response()
        try:
            transport.write(request)
        except (OSError, RuntimeError):  # the transport went away: nothing was sent
            self.close()
            raise _NotSent from None
        timer = None if deadline is None else loop.call_at(deadline, self._on_deadline)
        try:
            response = await waiter
        except BaseException:  # deadline, cancellation, a broken or lost connection
            self.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        self._pool.release(self)
        return response

    def close(self, error: ConnectError | None = None) -> None:
        """Close for good (idempotent); a request still waiting fails (with ``error``)."""
        if error is not None:
            self._fail(error)
        self.closed = True
        if self._peek is not None:  # first: the duplicate would hold the connection open
            self._peek.close()
            self._peek = None
        if self.transport is not None:
            self.transport.abort()

    def _on_deadline(self) -> None:
        self._fail(ConnectError(Code.DEADLINE_EXCEEDED, "no answer before the call's deadline"))
        self.close()

    def _fail(self, error: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclass
        self._pool.opened(self)
        sock = self.transport.get_extra_info("socket")
        if _PEEK and sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                self._peek = socket.fromfd(sock.fileno(), sock.family, sock.type)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: never reuse this connection
            self.close()
            return
        if not self._received and data.startswith(_TLS_RECORDS):
            self._fail_with(
                "the server answered in TLS: this is a TLS port; give the endpoint as https://"
            )
            return
        self._received = True
        if not self._head_done:
            self._raw_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._failure is not None:
                self._fail(self._failure)
            elif not self._head_done:  # a gRPC port answers with an HTTP/2 frame
                self._fail_with(f"{NOT_HTTP1} ({exc}): {bytes(data[:40])!r}")
            else:
                self._fail_with(f"malformed HTTP/1.1 response ({exc}): {bytes(data[:40])!r}")
            self.close()
            return
        # Still in the head: every byte read belongs to it (a line may be incomplete).
        if not self._head_done and self._raw_bytes > MAX_HEAD_BYTES:
            self._fail(self._head_too_large(self._raw_bytes))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self._pool.lost(self)
        if self._waiter is None or self._waiter.done():
            return
        if self._until_eof and self._head_done and self._failure is None:
            self.keep_alive = False
            self._complete()
        elif not self._received:
            self._fail(_Stale())
        else:
            why = f": {exc}" if exc else ""
            self._fail_with(f"the connection closed in the middle of the response{why}")

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response in one read: bytes out of turn
            self.closed = True  # not reused (exchange closes it once the call has its answer)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_bytes > MAX_HEAD_BYTES:
            raise self._stop(self._head_too_large(self._head_bytes))
        lower = name.lower()
        if lower == b"content-type":
            self._content_type = value
        elif lower == b"content-encoding":
            self._encoding = value
        elif lower == b"content-length":
            self._length = int(value) if value.isdigit() else -1
        elif lower == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        self._head_done = True
        status = self._parser.get_status_code()
        limit = self._pool.read_max_bytes
        if self._length > limit:
            raise self._stop(self._too_large(self._length, limit))
        if self._length < 0 and not self._chunked and status >= 200 and status not in (204, 304):
            self._until_eof = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        limit = self._pool.read_max_bytes
        if self._body_bytes > limit:
            raise self._stop(self._too_large(self._body_bytes, limit))
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # 1xx: an interim answer, the real one follows
            self._new_response()
            self._received = True
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- helpers -------------------------------------------------------------------

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            status = self._parser.get_status_code()
            waiter.set_result((status, self._content_type, self._encoding, body))

    def _stop(self, error: ConnectError) -> _Failure:
        self._failure = error
        return _Failure(error.message)

    def _fail_with(self, message: str) -> None:
        self._fail(ConnectError(Code.UNAVAILABLE, message))
        self.close()

    @staticmethod
    def _head_too_large(size: int) -> ConnectError:
        return ConnectError(
            Code.RESOURCE_EXHAUSTED,
            f"the response head is {size} bytes or more; this client reads at most "
            f"{MAX_HEAD_BYTES} (MAX_HEAD_BYTES)",
        )

    @staticmethod
    def _too_large(size: int, limit: int) -> ConnectError:
        # gRPC's words for the same limit, so the SDK explains both alike (client/_codec.py).
        return ConnectError(
            Code.RESOURCE_EXHAUSTED, f"Received message larger than max ({size} vs. {limit})"
        )


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one origin; see the module docstring.

    ``url`` is ``http://host:port`` or ``https://host:port`` (a trailing slash
    is ignored); ``ssl_context`` is used for https. Bound to the event loop of
    its first call.
    """

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, read_max_bytes: int) -> None:
        parts = urlsplit(url.rstrip("/"))
        self.host = parts.netloc  # the Host header
        default_port = 443 if parts.scheme == "https" else 80
        self._address = (parts.hostname or "", parts.port or default_port)
        self._ssl = ssl_context if parts.scheme == "https" else None
        self.read_max_bytes = read_max_bytes
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def post(self, request: bytes, timeout_s: float | None, resend_safe: bool) -> Response:
        """Send ``request`` (a whole HTTP/1.1 request) and return its response.

        ``timeout_s`` bounds the whole call; ``resend_safe`` allows sending it
        again on a fresh connection when a reused one ended before any answer.
        """
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the first call, or another loop: nothing to reuse
            self._idle.clear()
            self.loop = loop
        deadline = None if timeout_s is None else loop.time() + timeout_s
        conn = self._reuse()
        if conn is not None:
            try:
                return await conn.exchange(request, deadline)
            except _NotSent:
                pass
            except _Stale:
                if not resend_safe:
                    raise ConnectError(
                        Code.UNAVAILABLE,
                        "the server closed a kept-alive connection as the request went out; "
                        "it may or may not have been applied",
                    ) from None
        conn = await self._connect(deadline)
        try:
            return await conn.exchange(request, deadline)
        except _NotSent:
            raise ConnectError(
                Code.UNAVAILABLE, f"{NOT_CONNECTED}: the connection closed as soon as it opened"
            ) from None
        except _Stale:
            hint = "" if self._ssl else " (a TLS port does so to plain HTTP: then use https://)"
            raise ConnectError(
                Code.UNAVAILABLE, f"the server closed the connection without answering{hint}"
            ) from None

    def close(self) -> None:
        """Close every connection, idle or busy (a busy call fails CANCELED, as on a
        closed grpc.aio channel); later calls fail UNAVAILABLE, never sent."""
        self._closed = True
        closing = ConnectError(Code.CANCELED, "the client was closed during the call")
        for conn in list(self._open):
            conn.close(closing)
        self._idle.clear()

    # -- connections -----------------------------------------------------------------

    def _reuse(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, deadline: float | None) -> _Connection:
        if self._closed:
            raise ConnectError(
                Code.UNAVAILABLE, f"{NOT_CONNECTED}: the client closed its connections"
            )
        host, port = self._address
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), host, port, ssl=self._ssl,
                    server_hostname=host if self._ssl is not None else None,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectError(
                Code.DEADLINE_EXCEEDED, "no connection before the call's deadline"
            ) from None
        # Refused, unreachable, DNS, TLS (ssl.SSLError is an OSError), a host name IDNA refuses.
        except (OSError, UnicodeError) as exc:
            raise ConnectError(Code.UNAVAILABLE, f"{NOT_CONNECTED}: {exc}") from None
        return conn

    def opened(self, conn: _Connection) -> None:
        self._open.add(conn)

    def lost(self, conn: _Connection) -> None:
        self._open.discard(conn)

    def release(self, conn: _Connection) -> None:
        """After a complete response: keep ``conn`` for the next call, or close it."""
        if conn.keep_alive and not conn.closed and not self._closed and len(self._idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()


def client_ssl_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """TLS for https:// doors: the given CA certificates (PEM), else the system's."""
    context = (
        ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        if ca_pem
        else ssl.create_default_context()
    )
    context.set_alpn_protocols(["http/1.1"])
    return context


def proxy_applies(url: str) -> bool:
    """Whether a proxy setting of the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, minus ``NO_PROXY``) covers ``url``: this pool never uses a proxy."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)
