"""The SDK over a node's HTTP door: the Connect protocol, for HTTP-only egress.

An endpoint given as ``http://host:port`` or ``https://host:port`` is reached
through connectrpc's generated clients (binary protobuf over HTTP/1.1
keep-alive) instead of a gRPC channel. The stubs here look like gRPC stubs
(``stub.Get(request, timeout=..., metadata=...)``, errors as ``grpc.RpcError``
with ``code()`` and ``details()``), so routing, retries, failover and the error
table of the client stay the one implementation for both transports.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from pyqwest import Client as HttpClient
from pyqwest import HTTPTransport, SyncClient, SyncHTTPTransport

from edgekv.condition_status import CURRENT_VERSION_METADATA, VERSION_TYPE
from edgekv.v1 import cluster_connect, kv_connect

URL_SCHEMES = ("http://", "https://")
# Same ceiling as the gRPC channels' receive limit (client/_base.CHANNEL_OPTIONS).
READ_MAX_BYTES = 64 * 1024 * 1024
_STATUS_BY_CODE: dict[Code, grpc.StatusCode] = {
    code: grpc.StatusCode["CANCELLED" if code is Code.CANCELED else code.name] for code in Code
}


def is_url(endpoint: str) -> bool:
    """Whether ``endpoint`` names an HTTP door (``http://`` / ``https://``) rather than gRPC."""
    return endpoint.startswith(URL_SCHEMES)


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


def _headers(metadata: Sequence[tuple[str, str]] | None) -> dict[str, str] | None:
    return dict(metadata) if metadata else None


def _timeout_ms(timeout: float | None) -> int | None:
    return None if timeout is None else max(1, int(timeout * 1000))


def _method_name(method: str) -> str:
    """The generated client's name of an RPC: ``BatchGet`` -> ``batch_get``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


class AsyncStub:
    """``stub.Method(request, timeout=, metadata=)`` over an async Connect client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self._client, _method_name(method))
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


class SyncStub:
    """``stub.Method(request, timeout=, metadata=)`` over a blocking Connect client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self._client, _method_name(method))
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
    """The Connect clients of one SDK client, one pair per node URL, on one HTTP pool."""

    def __init__(self, asynchronous: bool, tls_ca_file: str | None) -> None:
        self._async = asynchronous
        ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None
        # Without a CA file https:// verifies against the system's CAs.
        tls = {"tls_ca_cert": ca} if ca else {"tls_include_system_certs": True}
        if asynchronous:
            self._transport: Any = HTTPTransport(**tls)
            self._http: Any = HttpClient(self._transport)
        else:
            self._transport = SyncHTTPTransport(**tls)
            self._http = SyncClient(self._transport)
        self._stubs: dict[tuple[str, str], Any] = {}

    def kv(self, url: str) -> Any:
        return self._stub(url, "kv")

    def cluster(self, url: str) -> Any:
        return self._stub(url, "cluster")

    def _stub(self, url: str, service: str) -> Any:
        stub = self._stubs.get((url, service))
        make: Callable[..., Any]
        if stub is None:
            if self._async:
                make = kv_connect.KVClient if service == "kv" else cluster_connect.ClusterClient
                stub = AsyncStub(self._client(make, url))
            else:
                make = (
                    kv_connect.KVClientSync
                    if service == "kv"
                    else cluster_connect.ClusterClientSync
                )
                stub = SyncStub(self._client(make, url))
            self._stubs[(url, service)] = stub
        return stub

    def _client(self, make: Callable[..., Any], url: str) -> Any:
        # No request compression: most requests are a key and a small value.
        return make(
            url.rstrip("/"), http_client=self._http, send_compression=None,
            read_max_bytes=READ_MAX_BYTES,
        )  # fmt: skip

    def close(self) -> Any:
        """Close the HTTP pool, like a channel of the SDK client's kind: an
        awaitable for the asyncio client, done at once for the blocking one."""
        self._stubs.clear()
        if self._async:
            return self._transport.aclose()
        self._transport.close()
        return None
