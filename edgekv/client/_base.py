"""What Client and AsyncClient share: settings, channels, stubs, topology, retry rules.

The two clients differ only in how they wait (a blocking call and ``time.sleep``
versus ``await`` and ``asyncio.sleep``); every decision — which node, whether to
retry, how long to back off, which exception to raise — is made here or in
``_codec``, once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._connect import ConnectDoors, is_url
from edgekv.client._session import Session
from edgekv.client._stream import (
    STREAMED_METHODS,
    AsyncOpStream,
    StreamNotSent,
    StreamRefused,
    check_transport,
)
from edgekv.client._stream_sync import SyncOpStream
from edgekv.client._types import Staleness
from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.embedded import EmbeddedReader, open_embedded
from edgekv.client.retry import DEFAULT_RETRY, RetryPolicy
from edgekv.consistency import LEVEL_NAMES, level_of
from edgekv.errors import EdgeKVError, InvalidArgument, Unavailable, never_sent
from edgekv.v1 import cluster_pb2_grpc, kv_pb2_grpc

DEFAULT_TIMEOUT_S = 5.0
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_DOORS_LOCK = threading.Lock()  # making a client's ConnectDoors (rare: once per client)


class ClientClosed(EdgeKVError):
    """A call was made on a client after ``close()``."""


class ClientBase:
    """Settings and connection plumbing; subclasses pick the gRPC stack (``_grpc``).

    Channels and stubs are created once per endpoint, on first use, and reused
    by every call until ``close()``; after that every call raises ClientClosed.
    """

    _grpc: Any = grpc  # grpc (sync) or grpc.aio: both have (in)secure_channel

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        rtt_probes: int = 3,
        channel_options: Sequence[tuple[str, Any]] = (),
        endpoint_overrides: Mapping[str, str] | None = None,
        token: str | None = None,
        tls_ca_file: str | None = None,
        transport: str | None = None,
        consistency: str | None = None,
        session_token: bytes = b"",
        embedded: str | os.PathLike[str] | None = None,
    ) -> None:
        # The session token and default read level (checked first: no channel opened yet).
        self._session = Session(consistency, session_token)
        seeds = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not seeds or not all(isinstance(s, str) and s for s in seeds):
            raise InvalidArgument(f"give at least one endpoint as host:port, got {endpoints!r}")
        for seed in seeds:
            codec.check_endpoint(seed)  # "ftp://h:p" fails here, not as a DNS error later
        # http(s):// seeds: every call goes through the nodes' HTTP doors (Connect).
        self._over_http = is_url(seeds[0])
        if any(is_url(seed) != self._over_http for seed in seeds):
            raise InvalidArgument(
                f"give every endpoint as HOST:PORT (gRPC) or every one as an http(s):// URL "
                f"(the HTTP door), not a mix: {seeds!r}"
            )
        self._doors: ConnectDoors | None = None
        # "stream": point operations over one KV.Stream per node (client/_stream.py);
        # the HTTP door has no KV.Stream (Connect bidi needs HTTP/2): unary there.
        self.transport = check_transport(
            self._default_transport() if transport is None else transport
        )
        self._streamed = self.transport == "stream" and not self._over_http
        self._streams: dict[str, Any] = {}
        self._tls_ca_file = tls_ca_file
        self.timeout_s = self._check_timeout(timeout_s)
        self._retry = retry or DEFAULT_RETRY
        self._options = (*CHANNEL_OPTIONS, *channel_options)
        self._channels: dict[str, Any] = {}
        self._kv_stubs: dict[str, kv_pb2_grpc.KVStub] = {}
        self._cluster_stubs: dict[str, cluster_pb2_grpc.ClusterStub] = {}
        self._closed = False
        self.topology = Topology.static(seeds)
        self._rtt_probes = rtt_probes
        self._overrides = dict(endpoint_overrides or {})
        # Sent with every call; None keeps the no-auth path free of metadata.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._tls = (
            grpc.ssl_channel_credentials(Path(tls_ca_file).read_bytes()) if tls_ca_file else None
        )
        # In-process LOCAL reads from a co-located node's files (client/embedded.py).
        # ``embedded_error`` says why they are off when they were asked for.
        self._embedded: EmbeddedReader | None
        self._embedded, self.embedded_error = open_embedded(embedded)

    @property
    def embedded(self) -> bool:
        """Whether LOCAL reads are served in-process from the node's files (``embedded=``)."""
        return self._embedded is not None

    def embedded_staleness(self) -> Staleness | None:
        """How far the embedded reader lags its node now; None when embedded reads are off."""
        return None if self._embedded is None else self._embedded.staleness()

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of idempotent calls."""
        return self._retry

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def consistency(self) -> str:
        """The client's default read level: "local", "session" or "strong"."""
        return LEVEL_NAMES[self._session.level]

    @property
    def session_token(self) -> bytes:
        """The token covering every write and non-LOCAL read of this client (b"": none yet).

        Opaque bytes (a serialized edgekv.v1.SessionToken): hand them to
        another process, which continues the session with ``observe_token``.
        """
        return self._session.token

    def observe_token(self, token: bytes) -> None:
        """Merge a session token from elsewhere (another client, a cookie, a queue message)."""
        self._session.observe(bytes(token))

    def _level(self, consistency: str | None) -> int:
        """The level number of one read (0, LOCAL, is the cheap default)."""
        return self._session.level if consistency is None else level_of(consistency)

    @staticmethod
    def _check_timeout(timeout_s: object) -> float:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise InvalidArgument(
                f"timeout_s must be a positive number of seconds, got {timeout_s!r}"
            )
        return float(timeout_s)

    def _timeout(self, timeout_s: float | None) -> float:
        """The per-attempt deadline of one call: its override, else the client's default."""
        return self.timeout_s if timeout_s is None else self._check_timeout(timeout_s)

    def _channel(self, endpoint: str) -> Any:
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._closed:
                raise ClientClosed("the client is closed; create a new one")
            if self._tls is not None:
                channel = self._grpc.secure_channel(endpoint, self._tls, self._options)
            else:
                channel = self._grpc.insecure_channel(endpoint, self._options)
            self._channels[endpoint] = channel
        return channel

    def _connect_doors(self) -> ConnectDoors:
        doors = self._doors
        if doors is None:
            with _DOORS_LOCK:  # the blocking client's threads: one ConnectDoors, not one each
                if self._closed:
                    raise ClientClosed("the client is closed; create a new one")
                if self._doors is None:
                    self._doors = ConnectDoors(self._grpc is not grpc, self._tls_ca_file)
                doors = self._doors
        return doors

    def _kv(self, node: NodeRoute) -> kv_pb2_grpc.KVStub:
        if self._over_http:
            return self._connect_doors().kv(node.endpoint)
        stub = self._kv_stubs.get(node.endpoint)
        if stub is None:
            stub = self._kv_stubs[node.endpoint] = kv_pb2_grpc.KVStub(self._channel(node.endpoint))
        return stub

    def _default_transport(self) -> str:
        """The transport measured faster for this client (README, bench/e2e/stream.py):
        the stream, for both (the blocking Client's since 2026-12-07: p50 x0.54-0.64 and
        p99 below unary's in 8 runs of 8)."""
        return "stream"

    def _kv_method(self, node: NodeRoute, method: str) -> Any:
        """What sends KV ``method`` to ``node``: an operation of the node's stream when
        streamed (and the node serves KV.Stream), else the unary stub method."""
        if self._streamed and method in STREAMED_METHODS:
            stream = self._streams.get(node.endpoint)
            if stream is None:
                kind = AsyncOpStream if self._grpc is not grpc else SyncOpStream
                stream = self._streams[node.endpoint] = kind(self._kv(node), self._metadata)
            if not stream.unsupported or stream.stream_again():
                return stream.method(method)
        return getattr(self._kv(node), method)

    def _cluster(self, node: NodeRoute) -> cluster_pb2_grpc.ClusterStub:
        if self._over_http:
            return self._connect_doors().cluster(node.endpoint)
        stub = self._cluster_stubs.get(node.endpoint)
        if stub is None:
            stub = cluster_pb2_grpc.ClusterStub(self._channel(node.endpoint))
            self._cluster_stubs[node.endpoint] = stub
        return stub

    def _forget_channels(self) -> list[Any]:
        """Mark closed and hand back the channels for the subclass to close."""
        self._closed = True
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None
        # Streams first: each is closed like a channel, before the channel it runs on.
        channels = [*self._streams.values(), *self._channels.values()]
        self._streams.clear()
        if self._doors is not None:
            channels.append(self._doors)  # closed like a channel of the client's kind
            self._doors = None
        self._channels.clear()
        self._kv_stubs.clear()
        self._cluster_stubs.clear()
        return channels

    # -- retry and failover decisions ------------------------------------------

    def _after_failure(
        self, exc: grpc.RpcError, node: NodeRoute, attempt: int, idempotent: bool
    ) -> float | None:
        """Decide what follows failed ``attempt`` on ``node``; call inside ``except``.

        Returns the seconds to back off before trying the same node again, or
        None to move on to the next node (the node is marked failed). Raises the
        mapped EdgeKVError when the code is final (anything but UNAVAILABLE), and
        for a write that may have reached the node: its outcome is unknown, and
        sending it to the next node could store it twice, under two versions.
        An operation a refused stream carried, or one its stream ended before it
        was written to it (StreamNotSent, first attempt), goes again at once.
        """
        if type(exc) is StreamRefused:  # its operations never ran: again at once, unary
            return 0.0
        if type(exc) is StreamNotSent and attempt == 1:
            return 0.0  # never sent: once again at once, on a new stream, as grpc would
        code = exc.code()
        if code != _UNAVAILABLE:
            raise self._error(exc, node) from None
        if not idempotent and not never_sent(code, exc.details()):
            self.topology.mark_failed(node)
            raise self._error(exc, node) from None
        if self._retry.should_retry(code, attempt, idempotent):
            return self._retry.backoff_s(attempt)
        self.topology.mark_failed(node)
        return None

    def _error(self, exc: grpc.RpcError, node: NodeRoute) -> EdgeKVError:
        """The EdgeKVError for ``exc`` from ``node`` (codec.error_from_rpc, knowing about TLS)."""
        tls = node.endpoint.startswith("https://") if self._over_http else self._tls is not None
        return codec.error_from_rpc(exc, node.endpoint, tls=tls)

    def _exhausted(
        self, last: grpc.RpcError | None, last_node: NodeRoute | None, tried: int
    ) -> EdgeKVError:
        """The error once every node was tried and none answered."""
        if last is None or last_node is None:
            return Unavailable("no node to send the call to")
        err = self._error(last, last_node)
        if tried > 1:
            return type(err)(f"all {tried} nodes unavailable; last: {err}")
        return err
