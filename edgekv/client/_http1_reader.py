"""Reading HTTP/1.1 responses for the SDK's pools (client/_http1.py, client/_http1_sync.py).

``ResponseReader`` parses the responses of one connection with
``httptools.HttpResponseParser`` (the node's parser too), one response per
request sent, whatever carries the bytes: the asyncio pool feeds it from
``data_received``, the blocking pool from ``socket.recv``. It holds the rules
both pools share about a response: the framings (Content-Length, chunked, a
body that runs to the end of the connection, interim 1xx answers first), the
bounds (a head of at most ``MAX_HEAD_BYTES``, a body of at most
``read_max_bytes``), whether the connection may carry another request, and the
errors, as connectrpc's ``ConnectError`` with the code connectrpc's own client
gives the same failure. Not thread-safe: the connection's owner feeds it.
"""

from __future__ import annotations

import httptools
from connectrpc.code import Code
from connectrpc.errors import ConnectError

MAX_HEAD_BYTES = 64 * 1024  # status line and header lines of one response
# How a response that is no HTTP/1.1 at all starts its message (client/_codec.py).
NOT_HTTP1 = "the answer is not HTTP/1.1"
# The first bytes of a TLS record (alert or handshake): a TLS port answered plain HTTP.
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")

# (status, content-type, content-encoding, body) of one response.
Response = tuple[int, bytes, bytes, bytes]


class Stale(Exception):
    """The connection ended before any byte of an answer (the server may have closed it first)."""


class _Failure(Exception):
    """Raised from a parser callback to stop parsing (the call's error is ``_failure``)."""


class ResponseReader:
    """The responses of one connection, parsed as their bytes arrive.

    Call ``start()`` when a request has gone out, then ``feed()`` what is
    received until it returns the response, or ``ended()`` when the connection
    ends first. After a response, ``keep_alive`` says whether the connection
    may carry the next request: not after ``connection: close``, a body that
    ran to the end of the connection, or bytes past the response (out of turn).
    """

    def __init__(self, read_max_bytes: int) -> None:
        self._limit = read_max_bytes
        self._parser = httptools.HttpResponseParser(self)
        self.keep_alive = False
        self.start()

    def start(self) -> None:
        """Expect the response to the request just sent."""
        self.response: Response | None = None
        self.received = False  # any byte of this response yet
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

    def feed(self, data: bytes) -> Response | None:
        """Parse ``data``: the response once it is complete, else None.

        Raises ``ConnectError`` for a response this client refuses (not
        HTTP/1.1, malformed, over a bound, TLS); the connection is then done.
        """
        if not self.received and data.startswith(_TLS_RECORDS):
            raise ConnectError(
                Code.UNAVAILABLE,
                "the server answered in TLS: this is a TLS port; give the endpoint as https://",
            )
        self.received = True
        if not self._head_done:
            self._raw_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._failure is not None:
                raise self._failure from None
            if self.response is not None:  # bytes out of turn: the answer stands
                return self.response
            if not self._head_done:  # a gRPC port answers with an HTTP/2 frame
                raise ConnectError(
                    Code.UNAVAILABLE, f"{NOT_HTTP1} ({exc}): {bytes(data[:40])!r}"
                ) from None
            raise ConnectError(
                Code.UNAVAILABLE, f"malformed HTTP/1.1 response ({exc}): {bytes(data[:40])!r}"
            ) from None
        # Still in the head: every byte read belongs to it (a line may be incomplete).
        if not self._head_done and self._raw_bytes > MAX_HEAD_BYTES:
            raise _head_too_large(self._raw_bytes)
        return self.response

    def ended(self, exc: BaseException | None = None) -> Response:
        """The connection ended (``exc``: why, if known) before the response was complete.

        Returns the response when its body runs to the end of the connection;
        raises ``Stale`` when no byte of it came, else ``ConnectError``.
        """
        self.keep_alive = False
        if self._until_eof and self._head_done and self._failure is None:
            return self._complete()
        if not self.received:
            raise Stale
        why = f": {exc}" if exc else ""
        raise ConnectError(
            Code.UNAVAILABLE, f"the connection closed in the middle of the response{why}"
        )

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.response is not None:  # a second response in one read: bytes out of turn
            self.keep_alive = False
            raise _Failure("a response nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_bytes > MAX_HEAD_BYTES:
            raise self._stop(_head_too_large(self._head_bytes))
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
        if self._length > self._limit:
            raise self._stop(_too_large(self._length, self._limit))
        if self._length < 0 and not self._chunked and status >= 200 and status not in (204, 304):
            self._until_eof = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._limit:
            raise self._stop(_too_large(self._body_bytes, self._limit))
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # 1xx: an interim answer, the real one follows
            self.start()
            self.received = True
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- helpers -------------------------------------------------------------------

    def _complete(self) -> Response:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        status = self._parser.get_status_code()
        self.response = (status, self._content_type, self._encoding, body)
        return self.response

    def _stop(self, error: ConnectError) -> _Failure:
        self._failure = error
        return _Failure(error.message)


def _head_too_large(size: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"the response head is {size} bytes or more; this client reads at most "
        f"{MAX_HEAD_BYTES} (MAX_HEAD_BYTES)",
    )


def _too_large(size: int, limit: int) -> ConnectError:
    # gRPC's words for the same limit, so the SDK explains both alike (client/_codec.py).
    return ConnectError(
        Code.RESOURCE_EXHAUSTED, f"Received message larger than max ({size} vs. {limit})"
    )
