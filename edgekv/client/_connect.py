"""The SDK over a node's HTTP door: the Connect protocol, for HTTP-only egress.

An endpoint given as ``http://host:port`` or ``https://host:port`` is reached
through the Connect protocol (binary protobuf over HTTP/1.1 keep-alive) instead
of a gRPC channel: the asyncio client's unary calls through ``ConnectUnary`` on
the lean HTTP/1.1 pool of client/_http1.py, its server streams (Watch) and
every call of the blocking client through connectrpc's generated clients on
pyqwest. The stubs here look like gRPC stubs (``stub.Get(request, timeout=...,
metadata=...)``, errors as ``grpc.RpcError`` with ``code()`` and
``details()``), so routing, retries, failover and the error table of the client
stay the one implementation for both transports.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import grpc
from connectrpc._protocol import ConnectWireError
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from pyqwest import Client as HttpClient
from pyqwest import HTTPTransport, SyncClient, SyncHTTPTransport

from edgekv._version import __version__
from edgekv.client._http1 import Http1Pool, client_ssl_context, proxy_applies
from edgekv.condition_status import CURRENT_VERSION_METADATA, VERSION_TYPE
from edgekv.v1 import cluster_connect, cluster_pb2, kv_connect, kv_pb2

URL_SCHEMES = ("http://", "https://")
# Same ceiling as the gRPC channels' receive limit (client/_base.CHANNEL_OPTIONS).
READ_MAX_BYTES = 64 * 1024 * 1024
_STATUS_BY_CODE: dict[Code, grpc.StatusCode] = {
    code: grpc.StatusCode["CANCELLED" if code is Code.CANCELED else code.name] for code in Code
}
_SERVICES: dict[str, ServiceDescriptor] = {
    "kv": kv_pb2.DESCRIPTOR.services_by_name["KV"],
    "cluster": cluster_pb2.DESCRIPTOR.services_by_name["Cluster"],
}
# Calls without effects: sent again on a fresh connection when a kept-alive one
# closed just as they went out (client/_http1.py); a write never is.
_RESEND_SAFE = frozenset({"Get", "BatchGet", "Scan", "Status", "Members"})
_USER_AGENT = f"edgekv-python/{__version__}"
# Header names are tokens (RFC 9110); values may hold no line break or NUL.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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
    """``stub.Method(request, timeout=, metadata=)`` over an async Connect client.

    Unary methods go through ``unary`` (the lean HTTP/1.1 pool) when given, else
    through the generated client ``client()`` makes (connectrpc on pyqwest), as
    Watch always does; that client is made on first use. Each method is looked
    up once and kept on the stub.
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
            if self._connect_client is None:
                self._connect_client = self._make_client()
            call = getattr(self._connect_client, _method_name(method))
            if method == "Watch":
                found = lambda request, timeout=None, metadata=None: _AsyncStream(  # noqa: E731
                    call(request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout))
                )
            else:
                found = _via_client(call)
        self.__dict__[method] = found
        return found


def _via_client(call: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A unary method of a generated async client, as a gRPC-style stub method."""

    async def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        try:
            return await call(request, headers=_headers(metadata), timeout_ms=_timeout_ms(timeout))
        except ConnectError as exc:
            raise ConnectRpcError(exc) from None

    return unary


class ConnectUnary:
    """The unary methods of one service of one node, on that node's ``Http1Pool``.

    Speaks Connect unary as connectrpc's client does for our services: ``POST
    /<service>/<Method>`` with ``content-type: application/proto``,
    ``connect-protocol-version: 1``, ``connect-timeout-ms`` from the timeout,
    the call's metadata as headers; 200 answers the message, any other status a
    Connect error (JSON ``code``, ``message``, ``details``), parsed by
    connectrpc's own ``ConnectWireError``; errors as ``ConnectRpcError``.
    """

    def __init__(self, pool: Http1Pool, service: ServiceDescriptor) -> None:
        self._pool = pool
        self._service = service

    def method(self, name: str) -> Callable[..., Awaitable[Any]]:
        """``unary(request, timeout=None, metadata=None)`` for method ``name``."""
        method = self._service.methods_by_name.get(name)
        if method is None or method.client_streaming or method.server_streaming:
            raise AttributeError(f"{self._service.full_name} has no unary method {name!r}")
        output = GetMessageClass(method.output_type)
        start = f"POST /{self._service.full_name}/{name} HTTP/1.1\r\nhost: {self._pool.host}\r\n"
        resend_safe = name in _RESEND_SAFE
        pool = self._pool
        heads: dict[Any, bytes] = {}  # metadata -> the request head up to the timeout

        async def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            try:
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
                answer = await pool.post(head + framing + body, timeout, resend_safe)
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
        ca = self._ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None
        # Without a CA file https:// verifies against the system's CAs.
        self._tls = {"tls_ca_cert": ca} if ca else {"tls_include_system_certs": True}
        self._transport: Any = None
        self._http: Any = None
        if not asynchronous:  # every call of the blocking client goes through it
            self._pyqwest()
        self._stubs: dict[tuple[str, str], Any] = {}
        self._pools: dict[str, Http1Pool] = {}  # the asyncio client's unary calls, per node
        self._ssl: ssl.SSLContext | None = None  # made on the first https:// pool

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
                stub = AsyncStub(partial(self._client, make, url), self._unary(url, service))
            else:
                make = (
                    kv_connect.KVClientSync
                    if service == "kv"
                    else cluster_connect.ClusterClientSync
                )
                stub = SyncStub(self._client(make, url))
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
            pool = self._pools[url] = Http1Pool(url, self._ssl, READ_MAX_BYTES)
        return ConnectUnary(pool, _SERVICES[service])

    def _pyqwest(self) -> Any:
        """The pyqwest client, made on first use: the asyncio client may never need it,
        and making one costs ~250 ms (it loads the system's CA certificates)."""
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
        awaitable for the asyncio client, done at once for the blocking one."""
        self._stubs.clear()
        if self._async:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
            return self._aclose_pyqwest()
        self._transport.close()
        return None

    async def _aclose_pyqwest(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
