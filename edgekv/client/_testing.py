"""One test body for both clients: ``Client`` as is, ``AsyncClient`` behind a blocking facade.

Test support shipped in the package (as asyncpg ships ``asyncpg._testbase``) so
that tests/unit and tests/integration share it. uvloop binds one test body to
two event loops (``Test_UV_TCP`` / ``Test_AIO_TCP``); here one body is bound to
two clients: a test takes the ``sdk`` fixture, parametrized over ``FLAVORS``,
and writes blocking code against ``sdk.client(...)``::

    @pytest.fixture(params=FLAVORS)
    def sdk(request: pytest.FixtureRequest) -> Iterator[Flavor]:
        with Flavor(request.param) as flavor:
            yield flavor

For "sync" that is a real ``Client``. For "async" it is a ``BlockingAsyncClient``:
every coroutine runs to completion on the flavor's private event loop, and every
async iterator comes back as an iterator that fetches each item on that loop,
so laziness (arguments checked at the call, pages fetched while iterating) is
kept. A flavor may also name a transport, ``"async-stream"``: its clients are
built with ``transport="stream"``, and its fake stubs answer ``KV.Stream`` by
calling their own unary methods (UNAVAILABLE ends the stream, as a transport
failure does; any other error answers that operation). ``VARIANTS`` lists every
client x transport. Imports nothing beyond the SDK, grpc and the standard library.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, cast

import grpc

from edgekv.client import aio, sync
from edgekv.client._stream import STREAMED_METHODS, StreamRpcError
from edgekv.client.aio import AsyncClient
from edgekv.client.sync import Client
from edgekv.v1 import kv_pb2

FLAVORS = ("sync", "async")
# Every client with every transport of point operations.
VARIANTS = ("sync", "sync-stream", "async", "async-stream")
_KIND_TO_METHOD = {kind: method for method, kind in STREAMED_METHODS.items()}


class BlockingAsyncClient:
    """``AsyncClient`` with ``Client``'s blocking interface, for tests; one thread only.

    Attributes and plain methods pass through untouched (``closed``,
    ``topology``, ``_kv_stubs``, ``scan`` itself); only their results are
    adapted: an awaitable is run to completion, an async iterator is wrapped.
    """

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not inspect.ismethod(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._adapt(attr(*args, **kwargs))

        return call

    def _adapt(self, result: Any) -> Any:
        if inspect.isawaitable(result):
            return self._loop.run_until_complete(result)
        if isinstance(result, AsyncIterator):
            return self._iterate(result)
        return result

    def _iterate(self, it: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                item = self._loop.run_until_complete(anext(it))
            except StopAsyncIteration:
                return
            yield item

    def __enter__(self) -> BlockingAsyncClient:
        self._loop.run_until_complete(self.client.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self.client.__aexit__(*exc))


def _answer(fake: Any, request: kv_pb2.StreamRequest) -> kv_pb2.StreamResponse | None:
    """What a node would answer to one StreamRequest, from ``fake``'s unary methods.

    Raises the fake's UNAVAILABLE error (the stream fails with it); None for a cancel.
    """
    kind = request.WhichOneof("op")
    if kind == "cancel" or kind is None:
        return None
    method = getattr(fake, _KIND_TO_METHOD[kind])
    timeout = request.timeout_ms / 1000.0 if request.timeout_ms else None
    try:
        response = method(getattr(request, kind), timeout=timeout, metadata=None)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            raise
        error = kv_pb2.StreamError(code=code.value[0], message=exc.details() or "")
        return kv_pb2.StreamResponse(id=request.id, error=error)
    answer = kv_pb2.StreamResponse(id=request.id)
    getattr(answer, kind).CopyFrom(response)
    return answer


class _SyncFakeStream:
    """grpc's response iterator of a KV.Stream, answered by a fake stub as requests come."""

    def __init__(self, fake: Any, requests: Any) -> None:
        self._fake = fake
        self._requests = iter(requests)

    def __iter__(self) -> _SyncFakeStream:
        return self

    def __next__(self) -> kv_pb2.StreamResponse:
        while True:
            answer = _answer(self._fake, next(self._requests))
            if answer is not None:
                return answer

    def cancel(self) -> bool:
        return True

    def is_active(self) -> bool:
        return True


class _AioFakeStream:
    """A grpc.aio StreamStreamCall of KV.Stream (write/read/cancel) over a fake stub."""

    def __init__(self, fake: Any) -> None:
        self._fake = fake
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self._failed: BaseException | None = None

    async def write(self, request: kv_pb2.StreamRequest) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            answer = _answer(self._fake, request)
        except grpc.RpcError as exc:  # the node had the request, then the stream ended:
            self._failed = exc  # this write went through; the next ones fail
            self._answers.put_nowait(exc)
            return
        if answer is not None:
            self._answers.put_nowait(answer)

    async def read(self) -> Any:
        answer = await self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cancel(self) -> bool:
        self._answers.put_nowait(StreamRpcError(grpc.StatusCode.CANCELLED, "cancelled"))
        return True


class _SyncStub:
    """A fake blocking stub, plus KV.Stream answered from its unary methods."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def Stream(self, requests: Any, metadata: Any = None) -> _SyncFakeStream:
        return _SyncFakeStream(self.fake, requests)


class _AsyncStub:
    """A fake gRPC stub's methods (upper case, as generated stubs name them) as coroutines,
    plus KV.Stream answered from its unary methods."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fake, name)
        if not name[:1].isupper():
            return attr

        async def rpc(*args: Any, **kwargs: Any) -> Any:
            return attr(*args, **kwargs)

        return rpc

    def Stream(self, metadata: Any = None) -> _AioFakeStream:
        return _AioFakeStream(self.fake)


class Flavor:
    """One of the two clients, and what a test needs to drive it: build, fake, patch.

    A context manager: on exit it closes the clients it built and, for
    "async", its event loop.
    """

    def __init__(self, name: str) -> None:
        if name not in VARIANTS:
            raise ValueError(f"flavor is {name!r}; it must be one of {VARIANTS}")
        self.name = name
        self.is_async = name.startswith("async")
        self.transport = "stream" if name.endswith("-stream") else "unary"
        # The client module whose ``_sleep`` backs off between retries.
        self.module: ModuleType = aio if self.is_async else sync
        self.loop = asyncio.new_event_loop() if self.is_async else None
        self._built: list[Any] = []

    def __repr__(self) -> str:
        return f"Flavor({self.name!r})"

    def client(self, endpoints: str | Sequence[str], **kwargs: Any) -> Client:
        """``Client(endpoints, **kwargs)``, or the AsyncClient facade (typed as a Client).

        Like the real thing, the sync client discovers here (and may raise);
        the async one on ``with`` or on its first call.
        """
        kwargs.setdefault("transport", self.transport)
        if self.loop is None:
            built: Any = Client(endpoints, **kwargs)
        else:
            built = BlockingAsyncClient(AsyncClient(endpoints, **kwargs), self.loop)
        self._built.append(built)
        return cast(Client, built)

    def stub(self, fake: Any) -> Any:
        """``fake`` (a blocking fake gRPC stub) as this flavor's client expects it."""
        return _AsyncStub(fake) if self.is_async else _SyncStub(fake)

    def patch_sleep(
        self, monkeypatch: Any, record: Callable[[float], None], *, wait: bool = False
    ) -> None:
        """Pass every backoff wait to ``record`` instead of sleeping (or as well, with ``wait``)."""
        if self.is_async:

            async def sleep(seconds: float) -> None:
                record(seconds)
                if wait:
                    await asyncio.sleep(seconds)

            monkeypatch.setattr(self.module, "_sleep", sleep)
        else:

            def blocking_sleep(seconds: float) -> None:
                record(seconds)
                if wait:
                    time.sleep(seconds)

            monkeypatch.setattr(self.module, "_sleep", blocking_sleep)

    def __enter__(self) -> Flavor:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for built in self._built:
                built.close()
        finally:
            if self.loop is not None:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()
