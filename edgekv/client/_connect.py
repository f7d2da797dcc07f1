"""The SDK over a node's HTTP door: the Connect protocol, for HTTP-only egress.

An endpoint given as ``http://host:port`` or ``https://host:port`` is reached
through the Connect protocol (binary protobuf over HTTP/1.1 keep-alive) instead
of a gRPC channel: unary calls through ``ConnectUnary`` (client/_connect_unary.py)
on a lean HTTP/1.1 pool per node, the asyncio client's on client/_http1.py's,
the blocking client's on client/_http1_sync.py's; server streams (Watch), and
every call when a proxy variable of the environment applies, through
connectrpc's generated clients on pyqwest. The stubs here look like gRPC
stubs (``stub.Get(request, timeout=..., metadata=...)``, errors as
``grpc.RpcError`` with ``code()`` and ``details()``), so routing, retries,
failover and the error table of the client stay the one implementation for
both transports.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from connectrpc.errors import ConnectError
from google.protobuf.descriptor import ServiceDescriptor
from pyqwest import Client as HttpClient
from pyqwest import HTTPTransport, SyncClient, SyncHTTPTransport

from edgekv.client._connect_unary import ConnectRpcError, ConnectUnary
from edgekv.client._http1 import Http1Pool, client_ssl_context, proxy_applies
from edgekv.client._http1_sync import Http1SyncPool
from edgekv.v1 import cluster_connect, cluster_pb2, kv_connect, kv_pb2

URL_SCHEMES = ("http://", "https://")
# Same ceiling as the gRPC channels' receive limit (client/_base.CHANNEL_OPTIONS).
READ_MAX_BYTES = 64 * 1024 * 1024
_SERVICES: dict[str, ServiceDescriptor] = {
    "kv": kv_pb2.DESCRIPTOR.services_by_name["KV"],
    "cluster": cluster_pb2.DESCRIPTOR.services_by_name["Cluster"],
}


def is_url(endpoint: str) -> bool:
    """Whether ``endpoint`` names an HTTP door (``http://`` / ``https://``) rather than gRPC."""
    return endpoint.startswith(URL_SCHEMES)


def _headers(metadata: Sequence[tuple[str, str]] | None) -> dict[str, str] | None:
    return dict(metadata) if metadata else None


def _timeout_ms(timeout: float | None) -> int | None:
    return None if timeout is None else max(1, int(timeout * 1000))


def _method_name(method: str) -> str:
    """The generated client's name of an RPC: ``BatchGet`` -> ``batch_get``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


class _Stub:
    """``stub.Method(request, timeout=, metadata=)`` over a node's Connect door.

    Unary methods go through ``unary`` (the lean HTTP/1.1 pool) when given, else
    through the generated client ``client()`` makes (connectrpc on pyqwest), as
    Watch always does; that client is made on first use. Each method is looked
    up once and kept on the stub. ``AsyncStub`` and ``SyncStub`` say how a
    generated client's methods become stub methods.
    """

    def __init__(self, client: Callable[[], Any], unary: ConnectUnary | None = None) -> None:
        self._make_client = client
        self._connect_client: Any = None
        self._unary = unary

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        found: Callable[..., Any]
        if method != "Watch" and self._unary is not None:
            found = self._unary.method(method)
        else:
            if self._connect_client is None:  # two threads may make one each: both work
                self._connect_client = self._make_client()
            found = self._via_client(method, getattr(self._connect_client, _method_name(method)))
        self.__dict__[method] = found
        return found

    @staticmethod
    def _via_client(method: str, call: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError


class AsyncStub(_Stub):
    """The asyncio client's stub: coroutine methods (``unary`` on an asyncio pool)."""

    @staticmethod
    def _via_client(method: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """A method of a generated async client, as a gRPC-style stub method."""
        if method == "Watch":
            return lambda request, timeout=None, metadata=None: _AsyncStream(
                call(request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout))
            )

        async def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            try:
                return await call(
                    request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout)
                )
            except ConnectError as exc:
                raise ConnectRpcError(exc) from None

        return unary


class SyncStub(_Stub):
    """The blocking client's stub: blocking methods (``unary`` on a blocking pool),
    safe to call from many threads."""

    @staticmethod
    def _via_client(method: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """A method of a generated blocking client, as a gRPC-style stub method."""
        if method == "Watch":
            return lambda request, timeout=None, metadata=None: _SyncStream(
                call(request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout))
            )

        def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            try:
                return call(request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout))
            except ConnectError as exc:
                raise ConnectRpcError(exc) from None

        return unary


class _AsyncStream:
    """A server stream: iterate it; ``cancel()`` ends it (as on a grpc.aio call)."""

    def __init__(self, events: AsyncIterator[Any]) -> None:
        self._events = events
        self._closing: asyncio.Task[None] | None = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for event in self._events:
                yield event
        except ConnectError as exc:
            raise ConnectRpcError(exc) from None

    def cancel(self) -> None:
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(aclose())


class _SyncStream:
    """A server stream: iterate it; ``cancel()`` ends it (as on a grpc call)."""

    def __init__(self, events: Iterator[Any]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._events
        except ConnectError as exc:
            raise ConnectRpcError(exc) from None

    def cancel(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


class ConnectDoors:
    """The Connect clients of one SDK client, per node URL: the unary calls on an
    HTTP/1.1 pool per node, Watch (and a proxy's URLs) on one pyqwest client.

    Safe to use from many threads (the blocking client's): what it makes on first
    use is made under a lock, and what it hands out is thread-safe.
    """

    def __init__(self, asynchronous: bool, tls_ca_file: str | None) -> None:
        self._async = asynchronous
        ca = self._ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None
        # Without a CA file https:// verifies against the system's CAs.
        self._tls = {"tls_ca_cert": ca} if ca else {"tls_include_system_certs": True}
        self._transport: Any = None
        self._http: Any = None
        self._lock = threading.RLock()  # guards making stubs, pools and the pyqwest client
        self._stubs: dict[tuple[str, str], Any] = {}
        self._pools: dict[str, Http1Pool | Http1SyncPool] = {}  # the unary calls, per node
        self._ssl: ssl.SSLContext | None = None  # made on the first https:// pool

    def kv(self, url: str) -> Any:
        return self._stubs.get((url, "kv")) or self._stub(url, "kv")

    def cluster(self, url: str) -> Any:
        return self._stubs.get((url, "cluster")) or self._stub(url, "cluster")

    def _stub(self, url: str, service: str) -> Any:
        with self._lock:
            stub = self._stubs.get((url, service))
            if stub is None:
                if self._async:
                    make: Any = (
                        kv_connect.KVClient if service == "kv" else cluster_connect.ClusterClient
                    )
                    kind: type[_Stub] = AsyncStub
                else:
                    make = (
                        kv_connect.KVClientSync
                        if service == "kv"
                        else cluster_connect.ClusterClientSync
                    )
                    kind = SyncStub
                stub = kind(partial(self._client, make, url), self._unary(url, service))
                self._stubs[(url, service)] = stub
            return stub

    def _unary(self, url: str, service: str) -> ConnectUnary | None:
        """Unary calls on the lean HTTP/1.1 pool, unless a proxy variable applies to
        ``url`` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY): pyqwest honours those."""
        if proxy_applies(url):
            return None
        pool = self._pools.get(url)
        if pool is None:
            if url.startswith("https://") and self._ssl is None:
                self._ssl = client_ssl_context(self._ca)
            kind = Http1Pool if self._async else Http1SyncPool
            pool = self._pools[url] = kind(url, self._ssl, READ_MAX_BYTES)
        return ConnectUnary(pool, _SERVICES[service])

    def _pyqwest(self) -> Any:
        """The pyqwest client, made on first use: the SDK client may never need it,
        and making one costs ~250 ms (it loads the system's CA certificates)."""
        with self._lock:
            if self._http is None:
                if self._async:
                    self._transport = HTTPTransport(**self._tls)
                    self._http = HttpClient(self._transport)
                else:
                    self._transport = SyncHTTPTransport(**self._tls)
                    self._http = SyncClient(self._transport)
            return self._http

    def _client(self, make: Callable[..., Any], url: str) -> Any:
        # No request compression: most requests are a key and a small value.
        return make(
            url.rstrip("/"), http_client=self._pyqwest(), send_compression=None,
            read_max_bytes=READ_MAX_BYTES,
        )  # fmt: skip

    def close(self) -> Any:
        """Close the HTTP pools, like a channel of the SDK client's kind: an
        awaitable for the asyncio client, done at once for the blocking one
        (its calls in flight fail CANCELLED)."""
        with self._lock:
            self._stubs.clear()
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        if self._async:
            return self._aclose_pyqwest()
        if self._transport is not None:
            self._transport.close()
        return None

    async def _aclose_pyqwest(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
