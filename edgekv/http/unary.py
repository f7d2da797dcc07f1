"""Connect unary calls of the KV service, answered without connectrpc's generic machinery.

The hot path of the door: ``POST /edgekv.v1.KV/<Method>`` with an
``application/proto`` or ``application/json`` body and no compression, which
is what Connect clients send for unary calls by default. connectrpc serves it
correctly but, measured on a node (bench/e2e/http_door.py), its per-call
set-up (header objects, deadline scopes, a disconnect watcher, chunked
responses) cost more server CPU than the gRPC port's whole call. This module
does the same protocol step for exactly that case: decode with connectrpc's
own codecs, call the same ``KVConnect`` method (same Call, auth, limits,
headers), encode with the same codec, and answer with a Content-Length. Any
other request (gRPC-Web, streaming, GET, compressed bodies, other content
types, a ``connect-timeout-ms`` that is not 1 to 10 digits) returns False and
goes to connectrpc, which remains the reference: the integration tests send
the same calls both ways.

Errors are Connect error JSON with the HTTP status of errors.HTTP_STATUS_BY_CODE,
as connectrpc writes them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import grpc
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from edgekv.errors import HTTP_STATUS_BY_CODE
from edgekv.http.app import Message, Receive, Scope, Send
from edgekv.http.rpc import KVConnect
from edgekv.v1 import kv_pb2

_Handler = Callable[[Any, RequestContext], Coroutine[Any, Any, Any]]
_CODECS = {
    b"application/proto": google_protobuf_binary_codec(),
    b"application/json": google_protobuf_json_codec(),
}


# The calls this module answers (KV's unary methods over Connect), by path.
UNARY_PATHS = frozenset(
    f"/edgekv.v1.KV/{method}" for method in ("Get", "BatchGet", "Put", "Delete", "Write", "Scan")
)


def _status_of(code: Code) -> int:
    name = "CANCELLED" if code is Code.CANCELED else code.name
    return HTTP_STATUS_BY_CODE.get(grpc.StatusCode[name], 500)


class _Context:
    """What KVConnect reads of a connectrpc RequestContext, built from the ASGI scope."""

    __slots__ = ("_deadline", "client_address", "request_headers", "response_headers")

    def __init__(
        self, headers: dict[str, str], client_address: str | None, deadline: float | None
    ) -> None:
        self.request_headers = headers
        self.response_headers: dict[str, str] = {}
        self.client_address = client_address
        self._deadline = deadline

    @property
    def timeout_ms(self) -> float | None:
        if self._deadline is None:
            return None
        return (self._deadline - time.monotonic()) * 1000.0


# A whole answer: status, headers (lower-case names), body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class UnaryRequest:
    """A Connect unary KV call this module answers, read from its request head."""

    __slots__ = ("codec", "content_type", "declared", "handler", "headers", "request_class",
                 "timeout_ms")  # fmt: skip

    def __init__(
        self,
        handler: _Handler,
        request_class: type,
        content_type: bytes,
        declared: int,
        timeout_ms: int | None,
        headers: dict[str, str],
    ) -> None:
        self.handler = handler
        self.request_class = request_class
        self.content_type = content_type
        self.codec = _CODECS[content_type]
        self.declared = declared  # Content-Length, -1 when absent or not a number
        self.timeout_ms = timeout_ms
        self.headers = headers  # the other request headers, for the handler


class ConnectUnary:
    """Serves the Connect unary calls of KV it can; one per node, on its event loop.

    One implementation for both ways a call reaches it: :meth:`serve` (an ASGI
    call, from HttpApp) and :meth:`prepare` + :meth:`answer` (a call whose
    request arrived whole in one read, answered straight from the connection by
    edgekv/http/direct.py); :meth:`serve` is those two around ASGI messages.
    """

    def __init__(self, service: KVConnect, message_bytes: int) -> None:
        self._message_bytes = message_bytes
        self._methods: dict[str, tuple[_Handler, type]] = {
            "/edgekv.v1.KV/Get": (service.get, kv_pb2.GetRequest),
            "/edgekv.v1.KV/BatchGet": (service.batch_get, kv_pb2.BatchGetRequest),
            "/edgekv.v1.KV/Put": (service.put, kv_pb2.PutRequest),
            "/edgekv.v1.KV/Delete": (service.delete, kv_pb2.DeleteRequest),
            "/edgekv.v1.KV/Write": (service.write, kv_pb2.WriteRequest),
            "/edgekv.v1.KV/Scan": (service.scan, kv_pb2.ScanRequest),
        }
        assert set(self._methods) == UNARY_PATHS

    def prepare(self, scope: Scope) -> UnaryRequest | None:
        """The call in ``scope`` (an ASGI HTTP scope), or None when it is connectrpc's."""
        method = self._methods.get(scope["path"])
        if method is None or scope["method"] != "POST":
            return None
        content_type = None
        declared = -1
        timeout_ms = None
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name == b"content-encoding":
                if value != b"identity":
                    return None
            elif name == b"connect-timeout-ms":
                # The protocol's 1 to 10 ASCII digits; anything else is connectrpc's
                # to refuse (int() of thousands of digits raises, of hundreds overflows).
                if not (0 < len(value) <= 10 and value.isdigit()):
                    return None
                timeout_ms = int(value)
            else:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        if content_type not in _CODECS:
            return None
        assert content_type is not None
        handler, request_class = method
        return UnaryRequest(handler, request_class, content_type, declared, timeout_ms, headers)

    async def answer(
        self, call: UnaryRequest, body: bytes | Receive, client: tuple[str, int] | None
    ) -> Answer:
        """Run ``call`` on ``body`` (its bytes, or the ASGI ``receive`` to read them from)
        and return its answer; a ConnectError becomes Connect error JSON."""
        try:
            if call.declared > self._message_bytes:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"request body is {call.declared} bytes; the limit is {self._message_bytes} "
                    "(max_message_bytes, at least max_value_bytes plus framing)",
                )
            if not isinstance(body, bytes):
                body = await self._read(body)
            try:
                request = call.codec.decode(body, call.request_class)
            except Exception as exc:
                raise ConnectError(Code.INVALID_ARGUMENT, f"unmarshal message: {exc}") from exc
            timeout_ms = call.timeout_ms
            deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
            address = f"{client[0]}:{client[1]}" if client else None
            ctx = _Context(call.headers, address, deadline)
            response = await call.handler(request, cast(RequestContext, ctx))
            encoded = call.codec.encode(response)
        except ConnectError as exc:
            return error_answer(exc)
        return (
            200,
            [
                (b"content-type", call.content_type),
                (b"content-length", b"%d" % len(encoded)),
                *((k.encode(), v.encode()) for k, v in ctx.response_headers.items()),
            ],
            encoded,
        )

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the call and return True, or return False (untouched) for connectrpc."""
        call = self.prepare(scope)
        if call is None:
            return False
        status, headers, body = await self.answer(call, receive, scope.get("client"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _read(self, receive: Receive) -> bytes:
        """The body, refused as soon as it grows past one message (a body of unknown length)."""
        message: Message = await receive()
        if message["type"] != "http.request":
            raise ConnectError(Code.CANCELED, "the client went away before its request ended")
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body  # the usual case: one chunk
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                raise ConnectError(Code.CANCELED, "the client went away before its request ended")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._message_bytes:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"request body is over {self._message_bytes} bytes (max_message_bytes)",
                )
            chunks.append(chunk)
        return b"".join(chunks)


def error_answer(exc: ConnectError) -> Answer:
    """``exc`` as connectrpc writes a unary error: its HTTP status and Connect error JSON."""
    error: dict[str, Any] = {"code": exc.code.value, "message": exc.message}
    if exc.details:  # as connectrpc writes them: base64 without padding
        error["details"] = [
            {"type": d.type_name, "value": base64.b64encode(d.message_bytes).decode().rstrip("=")}
            for d in exc.details
        ]
    body = json.dumps(error).encode()
    return (
        _status_of(exc.code),
        [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        body,
    )
