"""The Connect unary protocol over the SDK's HTTP/1.1 pools (client/_http1.py, _http1_sync.py).

``ConnectUnary`` gives the unary methods of one service of one node as
gRPC-style stub methods: coroutines on the asyncio pool (``Http1Pool``), plain
functions on the blocking one (``Http1SyncPool``); both build the request and
read the answer with the same code. Errors are ``ConnectRpcError``: a Connect
error seen as the ``grpc.RpcError`` the client's rules expect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import grpc
from connectrpc._protocol import ConnectWireError
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from edgekv._version import __version__
from edgekv.client._http1 import Http1Pool
from edgekv.client._http1_sync import Http1SyncPool
from edgekv.condition_status import CURRENT_VERSION_METADATA, VERSION_TYPE

_STATUS_BY_CODE: dict[Code, grpc.StatusCode] = {
    code: grpc.StatusCode["CANCELLED" if code is Code.CANCELED else code.name] for code in Code
}
# Calls without effects: sent again on a fresh connection when a kept-alive one
# closed just as they went out (client/_http1.py); a write never is.
_RESEND_SAFE = frozenset({"Get", "BatchGet", "Scan", "Status", "Members"})
_USER_AGENT = f"edgekv-python/{__version__}"
# Header names are tokens (RFC 9110); values may hold no line break or NUL.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ConnectRpcError(grpc.RpcError):
    """A Connect error, seen as the gRPC error the client's rules expect."""

    def __init__(self, error: ConnectError) -> None:
        super().__init__(error.message)
        self._code = _STATUS_BY_CODE.get(error.code, grpc.StatusCode.UNKNOWN)
        self._details = error.message
        # A failed condition's current version travels as an error detail.
        self._trailers = tuple(
            (CURRENT_VERSION_METADATA, d.message_bytes)
            for d in error.details
            if d.type_name == VERSION_TYPE
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """What the error carried besides code and message, as gRPC trailers."""
        return self._trailers

    def details(self) -> str:
        return self._details


class ConnectUnary:
    """The unary methods of one service of one node, on that node's HTTP/1.1 pool.

    Speaks Connect unary as connectrpc's client does for our services: ``POST
    /<service>/<Method>`` with ``content-type: application/proto``,
    ``connect-protocol-version: 1``, ``connect-timeout-ms`` from the timeout,
    the call's metadata as headers; 200 answers the message, any other status a
    Connect error (JSON ``code``, ``message``, ``details``), parsed by
    connectrpc's own ``ConnectWireError``; errors as ``ConnectRpcError``. The
    methods of a blocking pool may be called from many threads at once.
    """

    def __init__(self, pool: Http1Pool | Http1SyncPool, service: ServiceDescriptor) -> None:
        self._pool = pool
        self._service = service

    def method(self, name: str) -> Callable[..., Any]:
        """``unary(request, timeout=None, metadata=None)`` for method ``name``: a
        coroutine function on an asyncio pool, a plain function on a blocking one."""
        method = self._service.methods_by_name.get(name)
        if method is None or method.client_streaming or method.server_streaming:
            raise AttributeError(f"{self._service.full_name} has no unary method {name!r}")
        output = GetMessageClass(method.output_type)
        start = f"POST /{self._service.full_name}/{name} HTTP/1.1\r\nhost: {self._pool.host}\r\n"
        resend_safe = name in _RESEND_SAFE
        heads: dict[Any, bytes] = {}  # metadata -> the request head up to the timeout

        def encode(request: Any, timeout: float | None, metadata: Any) -> bytes:
            head = heads.get(metadata)
            if head is None:
                head = _head(start, metadata)
                if len(heads) < 16:  # the SDK sends one metadata tuple per client
                    heads[metadata] = head
            body = request.SerializeToString()
            if timeout is None:
                framing = b"content-length: %d\r\n\r\n" % len(body)
            else:
                framing = b"connect-timeout-ms: %d\r\ncontent-length: %d\r\n\r\n" % (
                    max(1, int(timeout * 1000)), len(body),
                )  # fmt: skip
            return head + framing + body

        pool = self._pool
        if isinstance(pool, Http1SyncPool):
            post = pool.post

            def blocking(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
                try:
                    answer = post(encode(request, timeout, metadata), timeout, resend_safe)
                    return _message(output, *answer)
                except ConnectError as exc:
                    raise ConnectRpcError(exc) from None

            return blocking
        apost = pool.post

        async def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            try:
                answer = await apost(encode(request, timeout, metadata), timeout, resend_safe)
                return _message(output, *answer)
            except ConnectError as exc:
                raise ConnectRpcError(exc) from None

        return unary


def _head(start: str, metadata: Any) -> bytes:
    """The request line and fixed headers, then the call's metadata as headers."""
    lines = [
        start,
        "content-type: application/proto\r\nconnect-protocol-version: 1\r\n",
        f"accept-encoding: identity\r\nuser-agent: {_USER_AGENT}\r\n",
    ]
    for name, value in metadata or ():
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                f"metadata {name!r}: {value[:40]!r} is no HTTP header (a name of letters, "
                "digits and -, a value without line breaks)",
            )
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ConnectError(
            Code.INVALID_ARGUMENT, f"metadata holds characters no HTTP header can carry: {exc}"
        ) from None


def _message(output: Any, status: int, content_type: bytes, encoding: bytes, body: bytes) -> Any:
    """The answer's message, or the ConnectError it carries (as connectrpc's client reads it)."""
    if encoding and encoding != b"identity":
        raise ConnectError(
            Code.INTERNAL, f"unknown encoding {encoding.decode('latin-1')!r}; this client sent "
            "accept-encoding: identity",
        )  # fmt: skip
    media = content_type.partition(b";")[0].strip().lower()
    if status == 200:
        if media == b"application/proto":
            try:
                return output.FromString(body)
            except DecodeError as exc:
                raise ConnectError(
                    Code.INTERNAL, f"unmarshal {output.__name__} ({len(body)} bytes): {exc}"
                ) from None
        raise ConnectError(
            Code.INTERNAL if media.startswith(b"application/") else Code.UNKNOWN,
            f"invalid content-type: {content_type.decode('latin-1')!r}; expecting "
            "'application/proto'",
        )
    if media == b"application/json":
        try:
            error = json.loads(body)
        except ValueError:
            error = None
        if isinstance(error, dict) and ("code" in error or "message" in error):
            raise ConnectWireError.from_dict(error, status, Code.UNAVAILABLE).to_exception()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "(no standard meaning)"
    shown = content_type.decode("latin-1") or "none"
    raise ConnectError(
        ConnectWireError.from_http_status(status).code,
        f"HTTP {status} {phrase}, not a Connect answer (content-type {shown}): {body[:200]!r}",
    )
