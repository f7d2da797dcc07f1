"""A real TCP proxy that can delay, cut and restore one link, on the wire.

Put one on each directed peer link (node A dials B through proxy A->B) and a
partition is a partition: connections drop and new ones are refused, while
both nodes keep serving their clients. Delay is added per direction as pure
latency (bytes are timestamped and released when due), so throughput is not
throttled the way a sleep-per-chunk proxy would. Used by the local launcher,
the WAN emulation and the tests (like etcd's pkg/proxy and asyncpg's fuzzer).

Proxies run on an event loop in a background thread (``ProxyHost``), so
synchronous tests and the CLI can drive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK = 64 * 1024


class FaultProxy:
    """Forwards connections from ``listen`` to ``target``; faults are set live.

    ``delay_ms`` is one-way latency added in each direction. ``cut()`` closes
    every open connection and refuses new ones until ``restore()``. Lives on
    its ProxyHost's loop; call the methods through the host from other threads.
    """

    def __init__(self, target_host: str, target_port: int, name: str = "") -> None:
        self.target = (target_host, target_port)
        self.name = name or f"->{target_host}:{target_port}"
        self.delay_ms = 0.0
        self.is_cut = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, avoid: frozenset[int] = frozenset()
    ) -> None:
        """Listen on ``port`` (0: a free one not in ``avoid``, the nodes' own ports)."""
        for _ in range(100):
            server = await asyncio.start_server(self._on_connect, host, port)
            bound = server.sockets[0].getsockname()[1]
            if port or bound not in avoid:
                self._server, self.port = server, bound
                return
            server.close()
            await server.wait_closed()
        raise OSError("no free port for the fault proxy outside the nodes' ports")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            conns = list(self._conns)
            self._drop_all()
            await asyncio.gather(*conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        self.is_cut = True
        self._drop_all()

    def restore(self) -> None:
        self.is_cut = False

    def set_delay(self, delay_ms: float) -> None:
        self.delay_ms = max(0.0, float(delay_ms))

    def _drop_all(self) -> None:
        for task in list(self._conns):
            task.cancel()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            _abort(writer)
            return
        self.connections_accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pump(reader, upstream_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # an end closed or the target is down: drop the connection, as a link would
        except asyncio.CancelledError:
            pass  # cut() or stop(): the connection dies, as on a real broken link
        finally:
            self._conns.discard(task)
            _abort(writer)
            if upstream_writer is not None:
                _abort(upstream_writer)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src -> dst, each chunk released ``delay_ms`` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        deliverer = asyncio.create_task(deliver())
        try:
            while True:
                data = await src.read(_CHUNK)
                await queue.put((time.monotonic() + self.delay_ms / 1000.0, data))
                if not data:
                    break
            await deliverer
        finally:
            deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deliverer


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        transport = writer.transport
        transport.abort()


class ProxyHost:
    """An event loop on a daemon thread that owns a set of FaultProxy objects."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        self.proxies: list[FaultProxy] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _call(self, fn: Any, *args: Any) -> None:
        async def call() -> None:
            fn(*args)

        self._run(call())

    def add(self, target: str, name: str = "", avoid: frozenset[int] = frozenset()) -> FaultProxy:
        """Start a proxy to ``target`` ("host:port"); returns it (its ``port`` is set).

        ``avoid``: ports the proxy must not take (the cluster's own, not yet bound).
        """
        host, port = target.rsplit(":", 1)
        proxy = FaultProxy(host.strip("[]"), int(port), name)
        self._run(proxy.start(avoid=avoid))
        self.proxies.append(proxy)
        return proxy

    def cut(self, proxy: FaultProxy) -> None:
        self._call(proxy.cut)

    def restore(self, proxy: FaultProxy) -> None:
        self._call(proxy.restore)

    def set_delay(self, proxy: FaultProxy, delay_ms: float) -> None:
        self._call(proxy.set_delay, delay_ms)

    def close(self) -> None:
        """Stop every proxy and the loop thread. Idempotent."""
        if not self._loop.is_running():
            return

        async def stop_all() -> None:
            await asyncio.gather(*(p.stop() for p in self.proxies), return_exceptions=True)
            # Connections still being torn down (or accepted meanwhile): finish them
            # here, so no coroutine is left suspended when the loop closes.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(stop_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
