"""Wiring of one PoP node: what is built, in which order, and how it is closed.

Start: engine (RocksDB) -> services -> gRPC server (KV, Cluster, health,
reflection) -> health SERVING -> ready file. Stop, in reverse: health
NOT_SERVING -> server drains in-flight calls (grace period) -> engine flushes
the WAL and closes RocksDB. An acknowledged write is in the WAL before its
response is sent, so a drain-then-close loses nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from edgekv import native, tls
from edgekv._version import __version__
from edgekv.cluster.membership import Membership
from edgekv.cluster.placement import PlacementRules
from edgekv.cluster.routing import Router
from edgekv.config import ClusterConfig, NodeConfig, load_config
from edgekv.errors import ConfigError, EdgeKVError
from edgekv.metrics import NodeMetrics
from edgekv.replication.antientropy import AntiEntropy, SyncStats
from edgekv.replication.changefeed import ChangeFeed
from edgekv.replication.collector import Collector
from edgekv.replication.sender import PeerSender, SenderSettings
from edgekv.server.auth import Authorizer
from edgekv.server.cluster_service import ClusterService
from edgekv.server.interceptors import InflightLimiter
from edgekv.server.kv_service import KVService
from edgekv.server.peer_service import PeerService
from edgekv.storage.clock import physical_ms, wall_ms
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.group_commit import GroupCommitter
from edgekv.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
)

log = logging.getLogger("edgekv.node")

DEFAULT_GRACE_S = 10.0
DEFAULT_PEER_FLUSH_S = 2.0
# Framing on top of the largest value: key, headers, protobuf overhead.
_MESSAGE_SLACK_BYTES = 64 * 1024


class Node:
    """One PoP node. ``start`` and ``stop`` run on the event loop that serves it.

    ``peer_addresses`` overrides where this node dials a peer (node id ->
    host:port); the local launcher uses it to put fault proxies on links.
    """

    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        *,
        peer_addresses: Mapping[str, str] | None = None,
        forward_addresses: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.spec: NodeConfig = config.node(node_id)
        self.placement = PlacementRules.from_config(config)
        self.peer_ids = [n.id for n in config.nodes if n.id != node_id]
        overrides = dict(peer_addresses or {})
        unknown = set(overrides) - set(self.peer_ids)
        if unknown:
            raise ConfigError(f"--peer-address names unknown peers: {', '.join(sorted(unknown))}")
        self._peer_address = {
            peer: overrides.get(peer) or _require_peer_listen(config.node(peer))
            for peer in self.peer_ids
        }
        self._forward_addresses = dict(forward_addresses or {})
        if set(self._forward_addresses) - set(self.peer_ids):
            raise ConfigError("--forward-address names unknown nodes")
        self.router: Router | None = None
        self.auth = _authorizer(config)
        self.metrics = NodeMetrics(self)
        self.metrics_port = 0
        if self.peer_ids and not self.spec.peer_listen:
            raise ConfigError(f"node {node_id}: peer_listen is required when the cluster has peers")
        self.engine: Engine | None = None
        self.feed: ChangeFeed | None = None
        self.senders: dict[str, PeerSender] = {}
        self.membership: Membership | None = None
        self.antientropy: AntiEntropy | None = None
        self.collector: Collector | None = None
        self.peer_service: PeerService | None = None
        self._committer: GroupCommitter | None = None
        self._server: grpc.aio.Server | None = None
        self._peer_server: grpc.aio.Server | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._health = health_aio.HealthServicer()
        self.port = 0  # the bound client port (the config may say 0: pick one)
        self.peer_port = 0

    # -- start -----------------------------------------------------------------

    async def start(self) -> None:
        config, spec = self.config, self.spec
        limits = config.limits
        self.engine = Engine(
            spec.data_dir,
            spec.id,
            EngineSettings(
                limits=limits,
                sync_writes=config.storage.sync_writes,
                block_cache_mb=config.storage.block_cache_mb,
                max_clock_skew_ms=config.replication.max_clock_skew_ms,
                placement_of=self.placement.group_of,
                placement_fingerprint=self.placement.fingerprint(),
            ),
        )
        try:
            await self._start_serving()
        except BaseException:
            await self.stop(grace_s=0)
            raise
        log.info(
            "node %s (%s) serving on %s (peers on %s), %d peers, read path %s, edgekv %s",
            spec.id, spec.region, self.endpoint, self.peer_endpoint or "-", len(self.peer_ids),
            native.ACTIVE, __version__,
        )  # fmt: skip

    async def _start_serving(self) -> None:
        config, spec, engine = self.config, self.spec, self.engine
        assert engine is not None
        self.feed = ChangeFeed(asyncio.get_running_loop())
        engine.add_listener(self.feed.on_change)
        if config.storage.sync_writes:
            self._committer = GroupCommitter(engine)
        hello = replication_pb2.PeerHello(node_id=spec.id, cluster=config.cluster)
        if self.peer_ids:
            await self._start_peer_server()
            self._start_replication(hello)
        self.collector = Collector(
            engine,
            grace_s=config.replication.tombstone_grace_s,
            interval_s=config.replication.gc_interval_s,
            peers_synced_from_ms=self._peers_synced_from_ms,
        )
        self._spawn(self.collector.run_collector(), "collector")
        self.router = Router(
            config,
            spec,
            self.placement,
            membership=self.membership,
            forward_addresses=self._forward_addresses,
            channel_factory=self._client_channel,
        )
        max_message = max(limits_message(config))
        self.limiter = InflightLimiter(config.limits.max_inflight_per_client)
        server = grpc.aio.server(
            options=_server_options(max_message),
            interceptors=[self.metrics.interceptor(), self.limiter],
            maximum_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        )
        kv_pb2_grpc.add_KVServicer_to_server(
            KVService(engine, spec.id, self._committer, self.feed, self.router, self.auth), server
        )
        cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self, self.auth), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
                cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        creds = None
        if config.security.tls is not None:
            creds = tls.server_credentials(config.security.tls, spec.id, require_client_auth=False)
        self.port = _bind(server, spec.listen, creds)
        await server.start()
        self._server = server
        if spec.metrics_listen:
            self.metrics_port = self.metrics.serve(spec.metrics_listen)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in ("edgekv.v1.KV", "edgekv.v1.Cluster"):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def _start_peer_server(self) -> None:
        config, spec, engine = self.config, self.spec, self.engine
        assert engine is not None and spec.peer_listen
        self.peer_service = PeerService(
            engine,
            node_id=spec.id,
            region=spec.region,
            cluster=config.cluster,
            known_nodes=[n.id for n in config.nodes],
            may_hold=lambda key: self.placement.allows(key, spec.region),
        )
        server = grpc.aio.server(options=_server_options(max(limits_message(config)) * 4))
        replication_pb2_grpc.add_ReplicationServicer_to_server(self.peer_service, server)
        creds = None
        if config.security.tls is not None:
            # Mutual TLS: only certificates signed by the cluster CA may replicate.
            creds = tls.server_credentials(config.security.tls, spec.id, require_client_auth=True)
        self.peer_port = _bind(server, spec.peer_listen, creds)
        await server.start()
        self._peer_server = server

    def _start_replication(self, hello: replication_pb2.PeerHello) -> None:
        config, engine, feed = self.config, self.engine, self.feed
        assert engine is not None and feed is not None
        settings = config.replication
        self.membership = Membership(
            hello=hello,
            peers=self.peer_ids,
            stub_for=self._stub,
            interval_s=settings.heartbeat_interval_s,
        )
        self.antientropy = AntiEntropy(
            engine,
            hello=hello,
            peers=self.peer_ids,
            stub_for=self._stub,
            placements_with=self._placements_with,
            interval_s=settings.antientropy_interval_s,
            on_synced=self._on_synced,
        )
        sender_settings = SenderSettings(
            batch_entries=settings.batch_entries, max_inflight=settings.max_inflight_batches
        )
        for peer in self.peer_ids:
            region = self.config.node(peer).region
            sender = PeerSender(
                engine,
                peer_id=peer,
                address=self._peer_address[peer],
                hello=hello,
                allowed=lambda key, region=region: self.placement.allows(key, region),  # type: ignore[misc]
                channel_factory=lambda _addr, peer=peer: self._channel(peer),  # type: ignore[misc]
                settings=sender_settings,
                on_repair_needed=self.antientropy.trigger,
            )
            self.senders[peer] = sender
            feed.add_waker(sender.wake)
            self._spawn(sender.run_sender(), f"sender-{peer}")
        self._spawn(self.membership.run_heartbeats(), "heartbeats")
        self._spawn(self.antientropy.run_antientropy(), "antientropy")
        self._spawn(self._run_log_trimmer(), "log-trimmer")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.spec.id}:{name}")
        task.add_done_callback(_log_task_death)
        self._tasks.append(task)

    def _channel(self, peer: str) -> grpc.aio.Channel:
        channel = self._channels.get(peer)
        if channel is None:
            channel = self._dial(
                self._peer_address[peer],
                [
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 2_000),
                ],
            )
            self._channels[peer] = channel
        return channel

    def _client_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to another node's client port, for forwarded calls."""
        max_message = max(limits_message(self.config))
        return self._dial(
            address,
            [
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )

    def _dial(self, address: str, options: list[tuple[str, int]]) -> grpc.aio.Channel:
        settings = self.config.security.tls
        if settings is None:
            return grpc.aio.insecure_channel(address, options=options)
        creds = tls.channel_credentials(settings, self.spec.id)
        return grpc.aio.secure_channel(address, creds, options=options)

    def _stub(self, peer: str) -> replication_pb2_grpc.ReplicationStub:
        return replication_pb2_grpc.ReplicationStub(self._channel(peer))

    def _placements_with(self, peer: str) -> list[bytes]:
        """Placement groups that both this node and ``peer`` may hold."""
        regions = {self.spec.region, self.config.node(peer).region}
        return self.placement.groups_shared_by(regions)

    def _peers_synced_from_ms(self) -> dict[str, int]:
        if self.antientropy is None:
            return {}
        return {peer: state.synced_from_ms for peer, state in self.antientropy.state.items()}

    def _on_synced(self, peer: str, stats: SyncStats) -> None:
        sender = self.senders.get(peer)
        if sender is not None and sender.needs_repair:
            sender.repaired()

    async def _run_log_trimmer(self) -> None:
        """Trim the log below what every peer acknowledged, within the retention bounds."""
        engine = self.engine
        assert engine is not None
        settings = self.config.replication
        while True:
            await asyncio.sleep(settings.log_trim_interval_s)
            acked = min((s.acked_seq for s in self.senders.values()), default=engine.last_seq)
            floor = max(acked, engine.last_seq - settings.log_retention_entries)
            floor = max(floor, self._seq_older_than(settings.log_retention_s))
            if floor >= engine.first_log_seq():
                engine.trim_log(floor + 1)

    def _seq_older_than(self, age_s: float) -> int:
        """The highest seq whose entry is older than ``age_s`` (0 if none); coarse."""
        engine = self.engine
        assert engine is not None
        cutoff_ms = wall_ms() - int(age_s * 1000)
        found = 0
        seq = engine.first_log_seq()
        step = 4096
        while seq <= engine.last_seq:
            entries = engine.read_log(seq, 1)
            if not entries or physical_ms(native.record_version(entries[0].record)[0]) > cutoff_ms:
                break
            found = entries[0].seq
            seq = found + step
        return found

    # -- addresses -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        host = self.spec.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def metrics_endpoint(self) -> str:
        if not self.spec.metrics_listen or not self.metrics_port:
            return ""
        host = self.spec.metrics_listen.rsplit(":", 1)[0]
        return f"{host}:{self.metrics_port}"

    @property
    def peer_endpoint(self) -> str:
        if not self.spec.peer_listen or not self.peer_port:
            return ""
        host = self.spec.peer_listen.rsplit(":", 1)[0]
        return f"{host}:{self.peer_port}"

    # -- stop ------------------------------------------------------------------

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Drain in-flight calls, ship what the peers can take, then close RocksDB."""
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._committer is not None:
            await self._committer.drain()
        if grace_s > 0:
            await self._flush_to_peers(min(grace_s, DEFAULT_PEER_FLUSH_S))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._peer_server is not None:
            await self._peer_server.stop(min(grace_s, 1.0))
            self._peer_server = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self.router is not None:
            await self.router.close()
        self.metrics.close()
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        log.info("node %s stopped", self.spec.id)

    async def _flush_to_peers(self, timeout_s: float) -> None:
        """Give connected senders a moment to ship the last writes before exit."""
        engine = self.engine
        if engine is None or not self.senders:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = [
                s for s in self.senders.values() if s.connected and s.acked_seq < engine.last_seq
            ]
            if not pending:
                return
            await asyncio.sleep(0.01)


def _authorizer(config: ClusterConfig) -> Authorizer | None:
    """The token checker, or None when auth is explicitly disabled (with a loud warning)."""
    auth = config.security.auth
    if auth is None:
        raise ConfigError(
            "security.auth is not configured: set security.auth.mode to tokens (with "
            "security.auth.tokens), or to disabled for local development only"
        )
    if auth.mode == "disabled":
        log.warning(
            "AUTHENTICATION IS DISABLED (security.auth.mode: disabled): anyone who can reach "
            "this node can read and write every key. Use this for local development only."
        )
        return None
    return Authorizer(auth)


def limits_message(config: ClusterConfig) -> tuple[int, int]:
    limits = config.limits
    return limits.max_message_bytes, limits.max_value_bytes + _MESSAGE_SLACK_BYTES


def _server_options(max_message: int) -> list[tuple[str, int]]:
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


def _bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
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


def _require_peer_listen(node: NodeConfig) -> str:
    if not node.peer_listen:
        raise ConfigError(f"node {node.id}: peer_listen is required when the cluster has peers")
    return node.peer_listen


def _log_task_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s died", task.get_name(), exc_info=task.exception())


def _write_ready_file(path: str, node: Node) -> None:
    """Tell a launcher we serve: written atomically, so a reader never sees half."""
    info = {
        "node_id": node.spec.id,
        "region": node.spec.region,
        "endpoint": node.endpoint,
        "peer_endpoint": node.peer_endpoint,
        "metrics_port": node.metrics_port,
        "pid": os.getpid(),
        "read_path": native.ACTIVE,
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    os.replace(tmp, path)


def _tune_gc() -> None:
    """Fewer, later collections: a request allocates only short-lived objects that
    reference counting frees, and the long-lived ones built at start-up never need
    scanning again. Cuts the p99 pauses of the cyclic collector."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), gen1, gen2)


async def _serve(
    config: ClusterConfig,
    node_id: str,
    ready_file: str | None,
    peer_addresses: Mapping[str, str] | None,
    forward_addresses: Mapping[str, str] | None,
) -> None:
    node = Node(config, node_id, peer_addresses=peer_addresses, forward_addresses=forward_addresses)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    _tune_gc()
    if ready_file:
        _write_ready_file(ready_file, node)
    await stop.wait()
    log.info("node %s: shutdown requested, draining", node_id)
    started = time.monotonic()
    await node.stop()
    log.info("node %s: drained and closed in %.2fs", node_id, time.monotonic() - started)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node_id,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, log_format: str = "text", node_id: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
        logging.Formatter.converter = time.gmtime
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def serve(
    config_path: str,
    node_id: str,
    ready_file: str | None = None,
    log_level: str = "info",
    peer_addresses: Mapping[str, str] | None = None,
    forward_addresses: Mapping[str, str] | None = None,
    log_format: str = "text",
) -> int:
    """Run one node until SIGTERM/SIGINT; return the process exit code.

    0 after a clean drain; 1 when the node cannot start (bad config, port in
    use, data directory of another node) with the reason on stderr.
    """
    import uvloop

    configure_logging(log_level, log_format, node_id)
    try:
        config = load_config(config_path)
        config.node(node_id)
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)
        uvloop.run(_serve(config, node_id, ready_file, peer_addresses, forward_addresses))
    except ConfigError as exc:
        print(f"edgekv: {config_path}: {exc}", file=sys.stderr)
        return 1
    except EdgeKVError as exc:
        print(f"edgekv: node {node_id}: {exc}", file=sys.stderr)
        return 1
    return 0
