"""Keep-alive HTTP/1.1 connections on blocking sockets, for the blocking SDK's unary Connect calls.

``Http1SyncPool`` is the ``Client``'s pool, as ``Http1Pool`` (client/_http1.py,
whose docstring states the rules both follow) is the ``AsyncClient``'s: the
same reuse newest first, peek before reuse, resend rules, bounds and errors,
the same ``ResponseReader`` (client/_http1_reader.py), on blocking sockets with
TCP_NODELAY. A blocking socket parsed with httptools measured ~75 µs of client
CPU per call here, against ~470 µs through connectrpc's blocking client on
pyqwest (bench/e2e/http_client.py).

Thread-safe: many threads call ``post`` at once; each call has a connection to
itself (an idle one or a new one) for as long as it runs, and the pool's lock
guards its lists only, never I/O. The call's deadline bounds connecting (each
address tried gets what is left of it; the name lookup before is the OS's, not
bounded), the TLS handshake, writing and reading: every socket operation's
timeout is the time left. ``close()`` fails the calls
in flight CANCELED (it shuts their sockets down; their threads close them).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time

from connectrpc.errors import ConnectError

from edgekv.client._http1 import (
    IdleConnections,
    NotSent,
    Origin,
    PooledConnection,
    closed_during_call,
    fresh_failed,
    not_connected,
    past_deadline,
    peeker,
    retry_on_fresh,
)
from edgekv.client._http1_reader import Response, Stale

_RECV_BYTES = 64 * 1024  # per recv(): more would be a large allocation (mmap) per call


def _timeout(deadline: float | None) -> float | None:
    """What is left of ``deadline`` (time.monotonic()) as a socket timeout; TimeoutError
    once it passed (a timeout of 0 would make the socket non-blocking)."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _Connection(PooledConnection):
    """One HTTP/1.1 connection on a blocking socket; used by one thread at a time."""

    def __init__(self, sock: socket.socket, read_max_bytes: int) -> None:
        super().__init__(read_max_bytes)
        self.sock = sock
        self._quiet = peeker(sock.fileno())

    def quiet(self) -> bool:
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False  # decrypted bytes nobody asked for
        return self._quiet()

    def exchange(self, request: bytes, deadline: float | None) -> Response:
        """Write ``request`` and read its response. On failure the connection is
        done: the pool closes it (never this: another thread may shut it down)."""
        sock, reader = self.sock, self.reader
        self.closed = True  # until the response is whole
        reader.start()
        try:
            sock.settimeout(_timeout(deadline))
            sock.sendall(request)
        except TimeoutError:
            raise past_deadline(connected=True) from None
        except OSError:  # refused before the whole request went out: it cannot have run
            raise NotSent from None
        try:
            while True:
                sock.settimeout(_timeout(deadline))
                data = sock.recv(_RECV_BYTES)
                response = reader.feed(data) if data else reader.ended()
                if response is not None:
                    break
        except TimeoutError:
            raise past_deadline(connected=True) from None
        except OSError as exc:  # reset, a TLS error: as an end of the connection
            response = reader.ended(exc)
        self.closed = False
        return response

    def interrupt(self) -> None:
        """Wake the thread blocked on this connection: it sees an end of stream."""
        with contextlib.suppress(OSError):  # the raw socket's shutdown, under TLS too
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class Http1SyncPool:
    """Keep-alive HTTP/1.1 connections to one origin on blocking sockets; see the
    module docstring. ``url`` is ``http://host:port`` or ``https://host:port``;
    ``ssl_context`` is used for https."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, read_max_bytes: int) -> None:
        self._origin = Origin(url, ssl_context)
        self.host = self._origin.host
        self.read_max_bytes = read_max_bytes
        self._idle: IdleConnections[_Connection] = IdleConnections()
        self._lock = threading.Lock()  # guards _busy and _closed
        self._busy: set[_Connection] = set()  # carrying a call; closed only by its thread
        self._closed = False

    def post(self, request: bytes, timeout_s: float | None, resend_safe: bool) -> Response:
        """Send ``request`` (a whole HTTP/1.1 request) and return its response.

        ``timeout_s`` bounds the whole call; ``resend_safe`` allows sending it
        again on a fresh connection when a reused one ended before any answer.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        conn = self._idle.take()
        if conn is not None:
            try:
                return self._exchange(conn, request, deadline)
            except (NotSent, Stale) as error:
                retry_on_fresh(error, resend_safe)
        conn = self._connect(deadline)
        try:
            return self._exchange(conn, request, deadline)
        except (NotSent, Stale) as error:
            raise fresh_failed(error, self._origin.ssl is not None) from None

    def close(self) -> None:
        """Close the idle connections and shut the busy ones down (their calls fail
        CANCELED); later calls fail UNAVAILABLE, never sent. Any thread may call it."""
        with self._lock:
            self._closed = True
            for conn in self._busy:  # under the lock: no thread closes them meanwhile
                conn.interrupt()
        for conn in self._idle.clear():
            conn.close()

    def _exchange(self, conn: _Connection, request: bytes, deadline: float | None) -> Response:
        with self._lock:
            closed = self._closed
            if not closed:
                self._busy.add(conn)
        if closed:
            conn.close()
            raise closed_during_call()
        try:
            response = conn.exchange(request, deadline)
        except BaseException as exc:
            self._done(conn)
            if self._closed and isinstance(exc, (ConnectError, NotSent, Stale)):
                raise closed_during_call() from None
            raise
        self._done(conn)
        return response

    def _done(self, conn: _Connection) -> None:
        """After a call: keep ``conn`` for the next one, or close it."""
        with self._lock:
            self._busy.discard(conn)
        if self._closed or not self._idle.keep(conn):
            conn.close()
        elif self._closed:  # closed while it went back: close() may have missed it
            for idle in self._idle.clear():
                idle.close()

    def _connect(self, deadline: float | None) -> _Connection:
        if self._closed:
            raise not_connected("the client closed its connections")
        (host, port), tls = self._origin.address, self._origin.ssl
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), _timeout(deadline))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock.settimeout(_timeout(deadline))
                sock = tls.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise past_deadline(connected=False) from None
        # Refused, unreachable, DNS, TLS (ssl.SSLError is an OSError), a host name IDNA refuses.
        except (OSError, UnicodeError) as exc:
            if sock is not None:
                sock.close()
            raise not_connected(exc) from None
        return _Connection(sock, self.read_max_bytes)
