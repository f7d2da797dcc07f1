"""Server interceptors: per-client admission control; malformed requests refused as such.

Admission control for the client port: a client (by peer address) with
``max_inflight_per_client`` unary calls running, ``max_watches_per_client``
server streams (Watch) open, or ``max_streams_per_client`` bidi streams
(KV.Stream, reflection) open, gets
RESOURCE_EXHAUSTED for the next one, with the limit and the setting named; the
port as a whole refuses calls beyond ``max_concurrent_rpcs`` the same way
(counted here: grpc.aio's own ``maximum_concurrent_rpcs`` costs an
asyncio.Condition round and a Task per call, README "Where a get's server CPU
goes", and it queues calls instead of refusing them). Streams
are counted apart because they are long-lived: a client's open Watches never
use up its unary calls. One misbehaving client cannot take the node's memory
or starve the others, and the replication port is a separate server that
client traffic never queues behind.

Both ports refuse a request that does not parse with INVALID_ARGUMENT
(``MalformedRequests``), not the UNKNOWN that grpc.aio answers by itself.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from edgekv.errors import ResourceExhausted
from edgekv.limits import Limits


def client_of(peer: str) -> str:
    """The client's address without the port: "ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4"."""
    return peer.rsplit(":", 1)[0]


def client_of_host(host: str) -> str:
    """The same name for a client known by its host ("1.2.3.4", "::1"), as gRPC writes it."""
    return f"ipv6:[{host}]" if ":" in host else f"ipv4:{host}"


class InflightLimiter(grpc.aio.ServerInterceptor):
    """Counts calls in flight per client address; owned by the node's event loop.

    One limiter serves every door of a node (the gRPC port as an interceptor, the
    HTTP door through ``enter_call``/``enter_stream``), so a client's calls count
    against one limit whichever protocol they use.
    """

    def __init__(
        self,
        max_inflight_per_client: int,
        max_streams_per_client: int = 64,
        max_bidi_per_client: int = 64,
        max_port_calls: int = 8192,
    ) -> None:
        self.port_limit = max_port_calls
        self.port_calls = 0  # calls and streams in progress on the gRPC port
        self.rejected_port = 0
        self.limit = max_inflight_per_client
        self.stream_limit = max_streams_per_client
        self.bidi_limit = max_bidi_per_client
        self.inflight: dict[str, int] = {}
        self.streams: dict[str, int] = {}  # open server streams (Watch) per client
        self.bidi: dict[str, int] = {}  # open bidi streams (KV.Stream) per client
        self.rejected = 0
        self.rejected_streams = 0
        self.rejected_bidi = 0
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def enter_call(self, client: str) -> None:
        """Count a unary call of ``client`` (any door); ResourceExhausted over the limit.

        Every successful ``enter_call`` must be paired with one ``leave_call``.
        """
        count = self.inflight.get(client, 0)
        if count >= self.limit:
            self.rejected += 1
            raise ResourceExhausted(
                f"client {client} has {count} calls in flight; the limit is {self.limit} "
                "(max_inflight_per_client)"
            )
        self.inflight[client] = count + 1

    def leave_call(self, client: str) -> None:
        left = self.inflight[client] - 1
        if left:
            self.inflight[client] = left
        else:
            del self.inflight[client]

    def enter_stream(self, client: str) -> None:
        """Count an open Watch of ``client`` (any door); ResourceExhausted over the limit."""
        count = self.streams.get(client, 0)
        if count >= self.stream_limit:
            self.rejected_streams += 1
            raise ResourceExhausted(
                f"client {client} has {count} Watch streams open; the limit is "
                f"{self.stream_limit} (max_watches_per_client)"
            )
        self.streams[client] = count + 1

    def leave_stream(self, client: str) -> None:
        left = self.streams[client] - 1
        if left:
            self.streams[client] = left
        else:
            del self.streams[client]

    def enter_bidi(self, client: str) -> None:
        """Count an open bidi stream (KV.Stream) of ``client``; ResourceExhausted over the limit."""
        count = self.bidi.get(client, 0)
        if count >= self.bidi_limit:
            self.rejected_bidi += 1
            raise ResourceExhausted(
                f"client {client} has {count} bidi streams (KV.Stream) open; the limit is "
                f"{self.bidi_limit} (max_streams_per_client)"
            )
        self.bidi[client] = count + 1

    def leave_bidi(self, client: str) -> None:
        left = self.bidi[client] - 1
        if left:
            self.bidi[client] = left
        else:
            del self.bidi[client]

    def enter_port(self) -> None:
        """Count a call or stream on the gRPC port; ResourceExhausted over max_concurrent_rpcs."""
        if self.port_calls >= self.port_limit:
            self.rejected_port += 1
            raise ResourceExhausted(
                f"the node has {self.port_calls} gRPC calls in progress; the limit is "
                f"{self.port_limit} (max_concurrent_rpcs)"
            )
        self.port_calls += 1

    @classmethod
    def from_limits(cls, limits: Limits) -> InflightLimiter:
        return cls(
            limits.max_inflight_per_client,
            limits.max_watches_per_client,
            limits.max_streams_per_client,
            limits.max_concurrent_rpcs,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        cached = self._wrapped.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = self.wrap(details.method, handler)
        self._wrapped[details.method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` admitted by the limits (WrapOnce composes it with other wrappers)."""
        if handler.unary_stream is not None:
            return self._limit_streams(handler)
        if handler.stream_stream is not None:
            return self._limit_bidi(handler)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            client = client_of(context.peer())
            try:
                self.enter_port()
                try:
                    self.enter_call(client)
                except ResourceExhausted:
                    self.port_calls -= 1
                    raise
            except ResourceExhausted as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            try:
                return await inner(request, context)
            finally:
                self.port_calls -= 1
                self.leave_call(client)

        return grpc.unary_unary_rpc_method_handler(
            limited, handler.request_deserializer, handler.response_serializer
        )

    def _enter_port_stream(self, client: str, enter: Callable[[str], None]) -> None:
        self.enter_port()
        try:
            enter(client)
        except ResourceExhausted:
            self.port_calls -= 1
            raise

    def _limit_streams(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(
            self._counted(handler.unary_stream, self.enter_stream, self.leave_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _limit_bidi(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(
            self._counted(handler.stream_stream, self.enter_bidi, self.leave_bidi),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _counted(
        self, inner: Any, enter: Callable[[str], None], leave: Callable[[str], None]
    ) -> Any:
        """``inner`` (a server-streaming or bidi behaviour) counted by ``enter``/``leave``
        per client and against the port, refused RESOURCE_EXHAUSTED over a limit."""

        async def admit(context: grpc.aio.ServicerContext) -> str:
            client = client_of(context.peer())
            try:
                self._enter_port_stream(client, enter)
            except ResourceExhausted as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            return client

        # A streaming handler is an async generator (ours) or a coroutine that
        # calls context.write (grpc's health Watch); each is wrapped as what it is.
        async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            client = await admit(context)
            try:
                async for response in inner(request, context):
                    yield response
            finally:
                self.port_calls -= 1
                leave(client)

        async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            client = await admit(context)
            try:
                return await inner(request, context)
            finally:
                self.port_calls -= 1
                leave(client)

        return generator if inspect.isasyncgenfunction(inner) else coroutine


class _Undecodable:
    """Stands in for a request that did not parse; the handler wrapper refuses it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def undecodable_reason(request: object) -> str:
    """Why ``request``, which is not the message its handler expects, was refused: a
    handler that reads with ``context.read()`` (KV.Stream) gets what did not parse as is."""
    if isinstance(request, _Undecodable):
        return request.reason
    return f"the request is not a valid message: got {type(request).__name__}"


class MalformedRequests(grpc.aio.ServerInterceptor):
    """A request that does not parse as its message ends with INVALID_ARGUMENT.

    grpc.aio decodes a request inside the call and answers a decoding error with
    UNKNOWN ("Unexpected <class DecodeError>"), the code of a server bug; a
    malformed request is the caller's. Put this interceptor last, so it wraps
    the servicer's own handler and the others keep its decoder. Stateless apart
    from a per-method cache; safe on one event loop.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        cached = self._wrapped.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = self.wrap(details.method, handler)
        self._wrapped[details.method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` refusing undecodable requests (WrapOnce composes it with others)."""
        if handler.request_deserializer is None:
            return handler
        return _tolerant_handler(handler)


Wrapper = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class WrapOnce(grpc.aio.ServerInterceptor):
    """Several interceptors' handler wrappers as one interceptor: each method's handler
    is wrapped once (innermost first: the order of ``wrappers`` is the order the
    interceptors would have been given in) and cached.

    grpc.aio runs every interceptor's ``intercept_service`` coroutine on every
    call, even when it only returns a cached handler: three interceptors cost
    six coroutines and two partials per call; this costs two. Safe on one loop.
    """

    def __init__(self, *wrappers: Wrapper) -> None:
        self._wrappers = wrappers[::-1]
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        cached = self._wrapped.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return handler
        for wrap in self._wrappers:
            handler = wrap(details.method, handler)
        self._wrapped[details.method] = handler
        return handler


def _tolerant_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    decode = handler.request_deserializer

    def tolerant(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # protobuf's DecodeError, or what a custom decoder raises
            return _Undecodable(f"the request is not a valid message: {exc}")

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async for request in requests:
            if type(request) is _Undecodable:  # no coroutine per good message (KV.Stream)
                await refuse(request, context)
            yield request

    encode = handler.response_serializer
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, tolerant, encode)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_behavior(handler.unary_stream, refuse, lambda r, c: r), tolerant, encode
        )
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def stream_in(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await stream_unary(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_in, tolerant, encode)
    return grpc.stream_stream_rpc_method_handler(
        _stream_behavior(handler.stream_stream, None, checked), tolerant, encode
    )


def _stream_behavior(inner: Any, refuse: Any, requests_of: Callable[[Any, Any], Any]) -> Any:
    """Wrap a server-streaming behavior, an async generator or a coroutine using context.write."""
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if refuse is not None:
                await refuse(request, context)
            async for response in inner(requests_of(request, context), context):
                yield response

        return generator

    async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if refuse is not None:
            await refuse(request, context)
        return await inner(requests_of(request, context), context)

    return coroutine
