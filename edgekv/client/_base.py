"""What Client and AsyncClient share: settings, channels, stubs and topology."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.retry import RetryPolicy
from edgekv.v1 import kv_pb2_grpc

DEFAULT_TIMEOUT_S = 5.0
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


class ClientBase:
    """Settings and connection plumbing; subclasses pick the gRPC stack (``_grpc``)."""

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
    ) -> None:
        seeds = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not seeds:
            raise ValueError("give at least one endpoint (host:port)")
        self.timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._options = (*CHANNEL_OPTIONS, *channel_options)
        self._channels: dict[str, Any] = {}
        self._kv_stubs: dict[str, kv_pb2_grpc.KVStub] = {}
        self.topology = Topology.static(seeds)
        self._rtt_probes = rtt_probes
        self._overrides = dict(endpoint_overrides or {})
        # Sent with every call; None keeps the no-auth path free of metadata.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._tls = (
            grpc.ssl_channel_credentials(Path(tls_ca_file).read_bytes()) if tls_ca_file else None
        )

    def _channel(self, endpoint: str) -> Any:
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._tls is not None:
                channel = self._grpc.secure_channel(endpoint, self._tls, self._options)
            else:
                channel = self._grpc.insecure_channel(endpoint, self._options)
            self._channels[endpoint] = channel
        return channel

    def _kv(self, node: NodeRoute) -> kv_pb2_grpc.KVStub:
        stub = self._kv_stubs.get(node.endpoint)
        if stub is None:
            stub = self._kv_stubs[node.endpoint] = kv_pb2_grpc.KVStub(self._channel(node.endpoint))
        return stub
