"""Keep-alive HTTP/1.1 for the SDK's unary Connect calls: the rules, and the asyncio pool.

Why hand-built on httptools (already the node's parser) rather than an HTTP
library: for one caller sending sequential Connect unary calls to a node's
door, the client CPU per call measured on this machine was 310-410 µs through
pyqwest (connectrpc's transport, async or blocking), 350-400 µs through aiohttp
and ~255 µs through the blocking http.client, against ~100-140 µs for an
asyncio Protocol and ~75 µs for a blocking socket feeding
``httptools.HttpResponseParser`` (bench/e2e/http_client.py). A unary call needs
little of HTTP: one POST with a Content-Length body, one response, keep-alive;
the pools do that and no more, with bounds.

Two pools, one per kind of SDK client, follow the same rules: ``Http1Pool``
here (asyncio, the ``AsyncClient``) and ``Http1SyncPool`` in
client/_http1_sync.py (blocking sockets, the ``Client``); both parse with
client/_http1_reader.py. A pool serves one origin (``http://host:port`` or
``https://``):

* one request in flight per connection (no pipelining); a connection goes back
  to the pool only after a complete response that allows keep-alive, and is
  reused newest first; at most ``MAX_IDLE`` wait, each for ``IDLE_EXPIRY_S``;
* a connection that timed out, was cancelled or lost mid-response, got a
  malformed, oversized or unfinished response, ``connection: close``, or bytes
  out of turn is closed and never reused;
* before an idle connection is reused it is checked for an end of stream not
  yet read (a non-blocking peek): a connection the server closed (its
  keep-alive timeout, a restart) is dropped before a byte of the request is
  written on it, and the call goes on a fresh one;
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
when the pool is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Generic, TypeVar, cast
from urllib.parse import urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from edgekv.client._http1_reader import Response, ResponseReader, Stale

# Below the node's keep-alive (75 s) and common proxies' (60-75 s); a server that closes
# sooner (uvicorn's and Node's 5 s defaults) is caught by the peek before reuse.
IDLE_EXPIRY_S = 15.0
MAX_IDLE = 32  # idle connections kept per origin
# How a failure to make a connection starts its message (edgekv.errors.never_sent).
NOT_CONNECTED = "cannot connect over HTTP/1.1"


class NotSent(Exception):
    """The connection was found closed before a byte of the request was written on it."""


class Origin:
    """Where a pool connects: ``url`` is ``http://host:port`` or ``https://host:port``
    (a trailing slash is ignored); ``ssl_context`` is used for https."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url.rstrip("/"))
        self.host = parts.netloc  # the Host header
        default_port = 443 if parts.scheme == "https" else 80
        self.address = (parts.hostname or "", parts.port or default_port)
        self.ssl = ssl_context if parts.scheme == "https" else None


class PooledConnection:
    """What both pools' connections share: a response reader, and what the idle list reads."""

    def __init__(self, read_max_bytes: int) -> None:
        self.reader = ResponseReader(read_max_bytes)
        self.closed = False  # for good, or not reusable: never goes back to the pool
        self.idle_since = 0.0  # time.monotonic() when it last went back to the pool

    @property
    def keep_alive(self) -> bool:
        return self.reader.keep_alive

    def quiet(self) -> bool:
        """Whether this idle connection can carry a request now (nothing came in meanwhile)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


C = TypeVar("C", bound=PooledConnection)


class IdleConnections(Generic[C]):
    """The idle connections of one pool, newest last. Thread-safe: a lock guards
    the list only, never a check or a close (the blocking pool's threads share it)."""

    def __init__(self) -> None:
        self._conns: list[C] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._conns)

    def take(self) -> C | None:
        """The newest idle connection that can carry a request now, or None;
        closes those found expired, closed, or with anything to read."""
        if not self._conns:
            return None
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._conns:
                    return None
                conn = self._conns.pop()
            if not conn.closed and now - conn.idle_since <= IDLE_EXPIRY_S and conn.quiet():
                return conn
            conn.close()

    def keep(self, conn: C) -> bool:
        """Keep ``conn`` after a complete response, if it allows keep-alive and
        there is room; False when the caller must close it."""
        if not conn.keep_alive or conn.closed:
            return False
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._conns) >= MAX_IDLE:
                return False
            self._conns.append(conn)
        return True

    def clear(self) -> list[C]:
        """Empty the list; returns what it held."""
        with self._lock:
            conns, self._conns = self._conns, []
        return conns


def peeker(fd: int) -> Callable[[], bool]:
    """``quiet()`` for the socket ``fd``: whether it has nothing to read, looked at
    without reading or waiting (one poll(2), ~1 µs; on the TCP socket, under TLS
    too). An end of stream (the server closed it), bytes out of turn or a closed
    descriptor: not quiet. Always quiet where the OS has no poll(2)."""
    if not hasattr(select, "poll"):
        return lambda: True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return lambda: not poll.poll(0)


def retry_on_fresh(error: NotSent | Stale, resend_safe: bool) -> None:
    """After a reused connection failed before any answer: returns when the call
    may go on a fresh connection, raises when it may not (a write maybe applied)."""
    if isinstance(error, Stale) and not resend_safe:
        raise ConnectError(
            Code.UNAVAILABLE,
            "the server closed a kept-alive connection as the request went out; "
            "it may or may not have been applied",
        ) from None


def fresh_failed(error: NotSent | Stale, tls: bool) -> ConnectError:
    """What a fresh connection that ended before any answer means."""
    if isinstance(error, NotSent):
        return ConnectError(
            Code.UNAVAILABLE, f"{NOT_CONNECTED}: the connection closed as soon as it opened"
        )
    hint = "" if tls else " (a TLS port does so to plain HTTP: then use https://)"
    return ConnectError(
        Code.UNAVAILABLE, f"the server closed the connection without answering{hint}"
    )


def not_connected(exc: BaseException | str) -> ConnectError:
    """No connection could be made: the call never left (edgekv.errors.never_sent)."""
    return ConnectError(Code.UNAVAILABLE, f"{NOT_CONNECTED}: {exc}")


def past_deadline(connected: bool) -> ConnectError:
    """The call's deadline passed, before a connection was made or before the answer."""
    what = "answer" if connected else "connection"
    return ConnectError(Code.DEADLINE_EXCEEDED, f"no {what} before the call's deadline")


def closed_during_call() -> ConnectError:
    """A call in flight when its pool closed (as on a closed gRPC channel)."""
    return ConnectError(Code.CANCELED, "the client was closed during the call")


class _Connection(asyncio.Protocol, PooledConnection):
    """One HTTP/1.1 connection on asyncio: writes a request, feeds its response to a
    ``ResponseReader``; owned by one pool."""

    def __init__(self, pool: Http1Pool) -> None:
        PooledConnection.__init__(self, pool.read_max_bytes)
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self._quiet: Callable[[], bool] | None = None  # peeks at the socket (peeker)
        self._waiter: asyncio.Future[Response] | None = None  # set while a request waits

    # -- the pool's side -----------------------------------------------------------

    def quiet(self) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        return self._quiet is None or self._quiet()

    async def exchange(self, request: bytes, deadline: float | None) -> Response:
        """Write ``request`` and wait for its response; ends the connection on any failure."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.close()
            raise NotSent
        loop = self._pool.loop
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self.reader.start()
        try:
            transport.write(request)
        except (OSError, RuntimeError):  # the transport went away: nothing was sent
            self.close()
            raise NotSent from None
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
        if self.transport is not None:
            self.transport.abort()

    def _on_deadline(self) -> None:
        self._fail(past_deadline(connected=True))
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
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                self._quiet = peeker(sock.fileno())

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None:  # nothing was asked: never reuse this connection
            self.close()
            return
        try:
            response = self.reader.feed(data)
        except ConnectError as exc:
            self.close(exc)
            return
        if response is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(response)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self._pool.lost(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self.reader.ended(exc)
        except (ConnectError, Stale) as error:
            self._fail(error)
            return
        self._waiter = None
        waiter.set_result(response)


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one origin on asyncio; see the module docstring.

    Cancelling the calling task cancels the call (CancelledError, as with
    grpc.aio). Bound to the event loop of its first call; not thread-safe: one
    event loop uses a pool.
    """

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, read_max_bytes: int) -> None:
        self._origin = Origin(url, ssl_context)
        self.host = self._origin.host
        self.read_max_bytes = read_max_bytes
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._idle: IdleConnections[_Connection] = IdleConnections()
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
        conn = self._idle.take()
        if conn is not None:
            try:
                return await conn.exchange(request, deadline)
            except (NotSent, Stale) as error:
                retry_on_fresh(error, resend_safe)
        conn = await self._connect(deadline)
        try:
            return await conn.exchange(request, deadline)
        except (NotSent, Stale) as error:
            raise fresh_failed(error, self._origin.ssl is not None) from None

    def close(self) -> None:
        """Close every connection, idle or busy (a busy call fails CANCELED, as on a
        closed grpc.aio channel); later calls fail UNAVAILABLE, never sent."""
        self._closed = True
        closing = closed_during_call()
        for conn in list(self._open):
            conn.close(closing)
        self._idle.clear()

    # -- connections -----------------------------------------------------------------

    async def _connect(self, deadline: float | None) -> _Connection:
        if self._closed:
            raise not_connected("the client closed its connections")
        (host, port), tls = self._origin.address, self._origin.ssl
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), host, port, ssl=tls,
                    server_hostname=host if tls is not None else None,
                )  # fmt: skip
        except TimeoutError:
            raise past_deadline(connected=False) from None
        # Refused, unreachable, DNS, TLS (ssl.SSLError is an OSError), a host name IDNA refuses.
        except (OSError, UnicodeError) as exc:
            raise not_connected(exc) from None
        return conn

    def opened(self, conn: _Connection) -> None:
        self._open.add(conn)

    def lost(self, conn: _Connection) -> None:
        self._open.discard(conn)

    def release(self, conn: _Connection) -> None:
        """After a complete response: keep ``conn`` for the next call, or close it."""
        if self._closed or not self._idle.keep(conn):
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
    ``ALL_PROXY``, minus ``NO_PROXY``) covers ``url``: the pools never use a proxy."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)
