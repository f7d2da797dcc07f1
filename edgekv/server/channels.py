"""How one node listens and dials: gRPC options, binding ports, outgoing channels.

Three kinds of link, each with its own options: the client port (server side,
messages up to the configured limit), the peer port (server side, four times
that, since a replication batch carries many values), and outgoing channels,
either to a peer's peer port (pooled, one per peer, for replication,
heartbeats and anti-entropy) or to another node's client port (for forwarded
calls). Every link uses TLS when the cluster file configures it, and every
peer channel carries this node's peer credential when the cluster has a peer
secret (server/peer_auth.py), so no peer call can go out without it.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from edgekv import tls
from edgekv.config.model import NodeSpec, TlsSettings
from edgekv.errors import ConfigError, EdgeKVError
from edgekv.limits import Limits
from edgekv.server.peer_auth import PeerCredentials

_PEER_MESSAGE_BYTES = 64 * 1024 * 1024

# Replication streams and heartbeats: big batches, fast reconnects.
PEER_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", _PEER_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _PEER_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def max_message_bytes(limits: Limits) -> int:
    """The largest gRPC message a client call may carry: a full value plus framing."""
    return limits.message_bytes


def server_options(max_message: int) -> list[tuple[str, int]]:
    """Options of a node's gRPC servers (client port and peer port)."""
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        # Refuse to share a port with another process: two nodes on one port
        # would split traffic silently.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


def client_channel_options(max_message: int) -> list[tuple[str, int]]:
    """Options of a channel to another node's client port (forwarded calls)."""
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Listen on ``address`` (host:port, port 0 = any free one); returns the bound port.

    Raises EdgeKVError naming the address when it cannot be bound.
    """
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise EdgeKVError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise EdgeKVError(f"cannot listen on {address}: address in use or not local")
    return port


def endpoint_of(listen: str | None, port: int) -> str:
    """``host:port`` with the host as configured and the port as bound ("" if unbound)."""
    if not listen or not port:
        return ""
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


class Dialer:
    """Opens one node's outgoing channels, with TLS when the cluster configures it.

    ``peer_credentials`` (the cluster peer secret's, or None) is added to every
    call on every peer channel; client-port channels never carry it.

    Peer channels are pooled (one per peer, reused by the sender, heartbeats and
    anti-entropy) and closed by :meth:`close`; client-port channels are new on
    every call and belong to the caller (the router closes its own). Runs on
    the node's event loop; not thread-safe.
    """

    def __init__(
        self,
        node_id: str,
        tls_settings: TlsSettings | None,
        peer_addresses: Mapping[str, str],
        max_message: int,
        peer_credentials: PeerCredentials | None = None,
    ) -> None:
        self._node_id = node_id
        self._peer_interceptors = (
            peer_credentials.interceptors() if peer_credentials is not None else None
        )
        self._tls = tls_settings
        self._peer_addresses = dict(peer_addresses)  # peer id -> host:port of its peer port
        self._max_message = max_message
        self._peer_channels: dict[str, grpc.aio.Channel] = {}

    def peer_address(self, peer: str) -> str:
        return self._peer_addresses[peer]

    def peer(self, peer: str) -> grpc.aio.Channel:
        """The pooled channel to ``peer``'s peer port."""
        channel = self._peer_channels.get(peer)
        if channel is None:
            channel = self._dial(
                self._peer_addresses[peer], PEER_CHANNEL_OPTIONS, self._peer_interceptors
            )
            self._peer_channels[peer] = channel
        return channel

    def client(self, address: str) -> grpc.aio.Channel:
        """A new channel to another node's client port, for forwarded calls."""
        return self._dial(address, client_channel_options(self._max_message))

    async def close(self) -> None:
        """Close the pooled peer channels."""
        for channel in self._peer_channels.values():
            await channel.close()
        self._peer_channels.clear()

    def _dial(
        self,
        address: str,
        options: list[tuple[str, int]],
        interceptors: list[grpc.aio.ClientInterceptor] | None = None,
    ) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
        creds = tls.channel_credentials(self._tls, self._node_id)
        return grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)


def peer_listen_of(node: NodeSpec) -> str:
    """Where ``node`` serves its peer port; a cluster with peers needs one on every node."""
    if not node.peer_listen:
        raise ConfigError(f"node {node.id}: peer_listen is required when the cluster has peers")
    return node.peer_listen
