"""The gRPC error edge: one place where an EdgeKVError becomes a gRPC status.

Every servicer method is wrapped by :func:`grpc_errors` (unary) or
:func:`grpc_stream_errors` (server streaming): a handler raises the
``EdgeKVError`` that says what went wrong and the wrapper ends the call with
the status code its class maps to (errors.GRPC_CODE_BY_ERROR) and its message.
etcd's v3rpc ``togRPCError`` plays this role there.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc

from edgekv.condition_status import trailing_metadata
from edgekv.errors import EdgeKVError, grpc_code_for

_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_Unary = Callable[[_S, _Req, grpc.aio.ServicerContext], Awaitable[_Resp]]
_Stream = Callable[[_S, _Req, grpc.aio.ServicerContext], AsyncGenerator[_Resp, None]]


def trailing_metadata_of(exc: EdgeKVError) -> tuple[tuple[str, str | bytes], ...]:
    """The trailing metadata the status of ``exc`` carries: what the error
    attached as ``exc.trailing_metadata`` (a failed condition names the current
    version in ``edgekv-current-version-bin``), else nothing. KV.Stream copies it
    into ``StreamError.metadata``, so both transports say the same
    (edgekv/condition_status.py writes it)."""
    return trailing_metadata(exc)


async def abort_with(context: grpc.aio.ServicerContext, exc: EdgeKVError) -> NoReturn:
    """End the call with the status code that ``exc``'s class maps to (and its metadata)."""
    await context.abort(grpc_code_for(exc), str(exc), trailing_metadata_of(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def grpc_errors(handler: _Unary[_S, _Req, _Resp]) -> _Unary[_S, _Req, _Resp]:
    """Wrap a unary handler so an EdgeKVError it raises ends the call with its status."""

    @functools.wraps(handler)
    async def unary(self: _S, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
        try:
            return await handler(self, request, context)
        except EdgeKVError as exc:
            await abort_with(context, exc)

    return unary


def grpc_stream_errors(handler: _Stream[_S, _Req, _Resp]) -> _Stream[_S, _Req, _Resp]:
    """Wrap a server-streaming handler the same way (events already sent stay sent)."""

    @functools.wraps(handler)
    async def stream(
        self: _S, request: _Req, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[_Resp, None]:
        try:
            # aclosing: when the call ends (or is cancelled) the handler's own
            # cleanup runs now, not whenever the garbage collector finalizes it.
            async with contextlib.aclosing(handler(self, request, context)) as items:
                async for item in items:
                    yield item
        except EdgeKVError as exc:
            await abort_with(context, exc)

    return stream


__all__ = ["abort_with", "grpc_errors", "grpc_stream_errors", "trailing_metadata_of"]
