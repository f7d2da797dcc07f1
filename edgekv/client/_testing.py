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
kept. Imports nothing beyond the SDK and the standard library.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, cast

from edgekv.client import aio, sync
from edgekv.client.aio import AsyncClient
from edgekv.client.sync import Client

FLAVORS = ("sync", "async")


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


class _AsyncStub:
    """A fake gRPC stub's methods (upper case, as generated stubs name them) as coroutines."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fake, name)
        if not name[:1].isupper():
            return attr

        async def rpc(*args: Any, **kwargs: Any) -> Any:
            return attr(*args, **kwargs)

        return rpc


class Flavor:
    """One of the two clients, and what a test needs to drive it: build, fake, patch.

    A context manager: on exit it closes the clients it built and, for
    "async", its event loop.
    """

    def __init__(self, name: str) -> None:
        if name not in FLAVORS:
            raise ValueError(f"flavor is {name!r}; it must be one of {FLAVORS}")
        self.name = name
        self.is_async = name == "async"
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
        if self.loop is None:
            built: Any = Client(endpoints, **kwargs)
        else:
            built = BlockingAsyncClient(AsyncClient(endpoints, **kwargs), self.loop)
        self._built.append(built)
        return cast(Client, built)

    def stub(self, fake: Any) -> Any:
        """``fake`` (a blocking fake gRPC stub) as this flavor's client expects it."""
        return _AsyncStub(fake) if self.is_async else fake

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
