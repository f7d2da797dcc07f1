"""The HTTP door's ASGI application: routing, body limits, timing, metrics, CORS.

One application per node, served by the listener (listener.py) on the node's
event loop. By path:

- ``/edgekv.v1.KV/<Method>`` and ``/edgekv.v1.Cluster/<Method>``: the RPC
  services over Connect (unary and streaming) and gRPC-Web, by connectrpc (rpc.py),
  the plain Connect unary KV calls by the hot path of unary.py;
- ``/v1/kv/...``: the REST face (rest.py); ``/v1/openapi.json``: its OpenAPI document;
- anything else: 404 with a JSON body.

What happens here happens for every route: a request body declared larger than
the route allows is refused before a byte of it is read; every answer gets a
``Server-Timing: total`` entry (the route adds where its time went: ``kv`` or
``forward``); every request is counted and timed (metrics.py, per route and
status). CORS headers are added only for the origins the cluster file lists.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from edgekv.errors import (
    EdgeKVError,
    NotFound,
    connect_code_name,
    grpc_code_for,
    http_status_for,
)
from edgekv.http import levels
from edgekv.limits import Limits
from edgekv.metrics import HttpRecorder
from edgekv.v1 import cluster_pb2, kv_pb2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UnaryPath(Protocol):
    """The Connect unary fast path (unary.py): True when it answered the request."""

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool: ...


OPENAPI_PATH = "/v1/openapi.json"
REST_PREFIX = "/v1/kv"
# Headers a browser may send to the door and read from it (CORS).
CORS_REQUEST_HEADERS = (
    "authorization", "content-type", "connect-protocol-version", "connect-timeout-ms",
    "grpc-timeout", "x-grpc-web", "x-user-agent", "edgekv-ttl-ms", *levels.REQUEST_HEADERS,
)  # fmt: skip
CORS_RESPONSE_HEADERS = (
    "edgekv-served-by", "edgekv-version", "edgekv-expires-at-ms", "server-timing",
    "grpc-status", "grpc-message", "grpc-status-details-bin", *levels.RESPONSE_HEADERS,
)  # fmt: skip


def _rpc_routes() -> frozenset[str]:
    """Every RPC path the door answers, for metric labels (unknown paths count as one)."""
    paths: set[str] = set()
    for module, service in ((kv_pb2, "KV"), (cluster_pb2, "Cluster")):
        desc = module.DESCRIPTOR.services_by_name[service]
        paths.update(f"/{desc.full_name}/{m.name}" for m in desc.methods)
    return frozenset(paths)


def error_body(exc: EdgeKVError) -> bytes:
    """The JSON body of an error: the Connect error shape, for every HTTP face."""
    code = connect_code_name(grpc_code_for(exc))
    return json.dumps({"code": code, "message": str(exc)}).encode()


async def send_error(
    send: Send,
    exc: EdgeKVError,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    status: int | None = None,
) -> None:
    """Answer ``exc`` as an HTTP status (``status`` or its own) and a JSON body."""
    body = error_body(exc)
    await send(
        {
            "type": "http.response.start",
            "status": status or http_status_for(exc),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def total_timing(started: float) -> tuple[bytes, bytes]:
    """The ``Server-Timing: total`` header of an answer whose request was read at
    ``started`` (time.perf_counter()), as every answer of the door carries it."""
    return (b"server-timing", b"total;dur=%.3f" % ((time.perf_counter() - started) * 1000))


class HttpApp:
    """The door's ASGI callable. ``rpc`` maps a path prefix to a connectrpc application;
    ``rest`` serves ``/v1/kv``; ``openapi`` is the document's JSON bytes."""

    def __init__(
        self,
        *,
        rpc: dict[str, ASGIApp],
        unary: UnaryPath,
        rest: ASGIApp,
        openapi: bytes,
        limits: Limits,
        recorder: HttpRecorder,
    ) -> None:
        self._rpc = rpc
        self._unary = unary.serve
        self._rest = rest
        self._openapi = openapi
        self._message_bytes = limits.message_bytes
        self._recorder = recorder
        self._routes = _rpc_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        started = time.perf_counter()
        path: str = scope["path"]
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), total_timing(started)]
            await send(message)

        route = path
        try:
            prefix = path[: path.find("/", 1) + 1]
            app = self._rpc.get(prefix)
            if app is not None:
                if path not in self._routes:
                    route = "rpc:other"
                if not await self._unary(scope, receive, timed_send):
                    await _in_a_task()
                    await app(scope, self._bounded(scope, receive), timed_send)
            elif path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
                route = f"{scope['method']} {REST_PREFIX}{'' if path == REST_PREFIX else '/{key}'}"
                await self._rest(scope, receive, timed_send)
            elif path == OPENAPI_PATH:
                await _send_json(timed_send, self._openapi)
            else:
                route = "other"
                await send_error(timed_send, NotFound(f"no route {path}; see {OPENAPI_PATH}"))
        finally:
            self._recorder.record(route, status, time.perf_counter() - started)

    def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that refuses a body declared larger than one message, unread.

        A body without a length is bounded by connectrpc's ``read_max_bytes``
        as it is read (the same limit).
        """
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self._message_bytes:
                    return _refusal(
                        f"request body is {declared} bytes; the limit is {self._message_bytes} "
                        "(max_message_bytes, at least max_value_bytes plus framing)"
                    )
                break
        return receive


async def _in_a_task() -> None:
    """Go on in a task if this call started without one (guard.py answers Connect unary
    calls in the step that read them): connectrpc's generic path needs a task."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)  # eager.start hands the rest of the call to a task


def _refusal(message: str) -> Receive:
    """A ``receive`` that refuses the request, so connectrpc answers in its protocol."""

    async def refuse() -> Message:
        raise ConnectError(Code.RESOURCE_EXHAUSTED, message)

    return refuse


async def _send_json(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def with_cors(app: ASGIApp, origins: tuple[str, ...]) -> ASGIApp:
    """``app`` answering CORS preflights and tagging responses for ``origins`` (none: as is)."""
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_RESPONSE_HEADERS),
        max_age=600,
    )


__all__ = ["HttpApp", "error_body", "send_error", "total_timing", "with_cors"]
