"""Wiring of one PoP node: what is built, in which order, and how it is closed.

``Node.__init__`` builds what needs no data directory: the placement rules,
the token checker, the metrics registry, the health service, the in-flight
limiter and the dialer of outgoing channels. It reads the cluster file only.

``start`` opens the rest, in this order, and keeps it in one :class:`_Running`:
engine (RocksDB) -> change feed, and the group committer with ``sync_writes``
-> with peers: the peer server (Replication service), then membership,
anti-entropy, one sender per peer (tasks: senders, heartbeats, anti-entropy,
log trimmer, quarantine release) -> dead-record collector -> router -> the
hand-off of keys a rule change disallowed -> the :class:`NodeView` -> the
request layer (``Coordinator``) and the client server (KV, Cluster, health,
reflection), then the HTTP door (``http_listen``) -> /metrics -> health
SERVING. If a step fails, what was opened is closed again and the error raised.

``stop`` goes the other way: health NOT_SERVING -> the client server and the
HTTP door drain in-flight calls (grace period) -> group commits drain ->
connected senders get a moment to ship the last writes -> background tasks are cancelled ->
peer server stops -> peer channels, router and /metrics close -> the engine
flushes the WAL and closes RocksDB. An acknowledged write is in the WAL
before its response is sent, so a drain-then-close loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from grpc_health.v1.health import aio as health_aio

from edgekv import native, tls
from edgekv._version import __version__
from edgekv.cluster.placement import PlacementRules
from edgekv.cluster.routing import Router
from edgekv.config.model import ClusterConfig, NodeSpec
from edgekv.coordinator import Coordinator
from edgekv.coordinator.draining import StreamDrain
from edgekv.coordinator.levels import request_levels
from edgekv.errors import ConfigError
from edgekv.http.door import HttpDoor
from edgekv.logs import log_task_death
from edgekv.metrics import NodeMetrics
from edgekv.replication.changefeed import ChangeFeed
from edgekv.replication.collector import Collector
from edgekv.replication.handoff import Handoff
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.sender import flush_to_peers
from edgekv.server.auth import authorizer_for
from edgekv.server.channels import (
    Dialer,
    bind,
    endpoint_of,
    max_message_bytes,
    peer_listen_of,
    server_options,
)
from edgekv.server.client_api import add_client_services, set_health
from edgekv.server.cluster_service import ClusterService
from edgekv.server.embedded_publisher import EmbeddedPublisher
from edgekv.server.interceptors import InflightLimiter, MalformedRequests, WrapOnce
from edgekv.server.kv_service import KVService
from edgekv.server.peer_auth import PeerCredentials, peer_secret_for
from edgekv.server.peer_plane import PeerPlane, PeerPlaneStarter
from edgekv.server.view import NodeView
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.group_commit import GroupCommitter
from edgekv.storage.recovery import run_storage_recovery
from edgekv.v1 import replication_pb2_grpc

log = logging.getLogger("edgekv.node")

DEFAULT_GRACE_S = 10.0
DEFAULT_PEER_FLUSH_S = 2.0


@dataclass(frozen=True, slots=True)
class _Running:
    """Everything that exists only between ``start`` and ``stop``, built whole by ``start``."""

    engine: Engine
    feed: ChangeFeed
    committer: GroupCommitter | None  # only with sync_writes
    replication: PeerPlane | None  # only with peers
    collector: Collector
    router: Router
    server: grpc.aio.Server  # the client port
    http: HttpDoor | None  # only with http_listen
    view: NodeView
    drain: StreamDrain  # ends the Watch and KV.Stream calls when the node stops


class Node(PeerPlaneStarter):
    """One PoP node. ``start`` and ``stop`` run on the event loop that serves it.

    ``peer_addresses`` overrides where this node dials a peer (node id ->
    host:port); the local launcher uses it to put fault proxies on links.
    ``forward_addresses`` does the same for forwarded client calls.
    """

    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        *,
        peer_addresses: Mapping[str, str] | None = None,
        forward_addresses: Mapping[str, str] | None = None,
        purge_disallowed: bool = False,
    ) -> None:
        self.config = config
        self.spec: NodeSpec = config.node(node_id)
        self.placement = PlacementRules.from_config(config)
        self.peer_ids = [n.id for n in config.nodes if n.id != node_id]
        overrides = dict(peer_addresses or {})
        unknown = set(overrides) - set(self.peer_ids)
        if unknown:
            raise ConfigError(f"--peer-address names unknown peers: {', '.join(sorted(unknown))}")
        peer_address = {
            peer: overrides.get(peer) or peer_listen_of(config.node(peer)) for peer in self.peer_ids
        }
        self._forward_addresses = dict(forward_addresses or {})
        self._purge_disallowed = purge_disallowed  # the operator's --purge-disallowed
        if set(self._forward_addresses) - set(self.peer_ids):
            raise ConfigError("--forward-address names unknown nodes")
        self.auth = authorizer_for(config)
        self.metrics = NodeMetrics()
        if self.peer_ids and not self.spec.peer_listen:
            raise ConfigError(f"node {node_id}: peer_listen is required when the cluster has peers")
        self._max_message = max_message_bytes(config.limits)
        # Refuses token auth over an unauthenticated peer plane (peer_auth.py).
        self._peer_secret = peer_secret_for(config, has_peers=bool(self.peer_ids))
        secret = self._peer_secret
        credentials = PeerCredentials(secret, config.cluster, node_id) if secret else None
        self._dialer = Dialer(
            node_id, config.security.tls, peer_address, self._max_message, credentials
        )
        self.refusals = PeerRefusals()  # what the peer plane refused, for metrics
        self._limiter = InflightLimiter.from_limits(config.limits)
        self._health = health_aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []  # long-lived; cancelled by stop
        self._running: _Running | None = None  # set by start, cleared by stop

    @property
    def view(self) -> NodeView:
        """What this running node shows metrics and the Cluster service."""
        return self._require_running().view

    @property
    def engine(self) -> Engine:
        """The running node's storage engine, for in-process tools (the test harness)."""
        return self._require_running().engine

    def _require_running(self) -> _Running:
        if self._running is None:
            raise RuntimeError(f"node {self.spec.id} is not running")
        return self._running

    # -- start -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the engine and start every service (module docstring: the order).

        On failure, closes what it opened and re-raises; the node may then be dropped.
        """
        config, spec = self.config, self.spec
        async with contextlib.AsyncExitStack() as undo:
            undo.callback(log.info, "node %s stopped", spec.id)
            engine = Engine(
                spec.data_dir,
                spec.id,
                EngineSettings(
                    limits=config.limits,
                    sync_writes=config.storage.sync_writes,
                    block_cache_mb=config.storage.block_cache_mb,
                    max_clock_skew_ms=config.replication.max_clock_skew_ms,
                    placement_of=self.placement.placement_of,
                    placement_fingerprint=self.placement.fingerprint(),
                ),
            )
            undo.callback(engine.close)
            self._publisher = EmbeddedPublisher(engine, config, spec, self.placement)
            undo.callback(self._publisher.close)
            undo.callback(self.metrics.close)
            undo.push_async_callback(self._dialer.close)
            undo.push_async_callback(self._cancel_tasks)
            self._running = await self._start_on(engine, undo)
            undo.pop_all()
        running = self._running
        log.info(
            "node %s (%s) serving on %s (peers on %s), %d peers, read path %s, edgekv %s",
            spec.id, spec.region, running.view.endpoint, running.view.peer_endpoint or "-",
            len(self.peer_ids), native.ACTIVE, __version__,
        )  # fmt: skip

    async def _start_on(self, engine: Engine, undo: contextlib.AsyncExitStack) -> _Running:
        config, spec = self.config, self.spec
        feed = ChangeFeed(asyncio.get_running_loop())
        engine.add_listener(feed.on_change)
        committer = GroupCommitter(engine) if config.storage.sync_writes else None
        if committer is not None:
            undo.push_async_callback(committer.drain)
        replication = None
        if self.peer_ids:
            replication = await self._start_replication(engine, feed, undo)
        senders = replication.senders if replication is not None else {}
        peer_health = replication.membership.peers if replication is not None else {}
        sync_state = replication.antientropy.state if replication is not None else {}
        collector = Collector(
            engine,
            grace_s=config.replication.tombstone_grace_s,
            interval_s=config.replication.gc_interval_s,
            peers_synced_from_ms=lambda: {
                peer: state.synced_from_ms for peer, state in sync_state.items()
            },
        )
        self._spawn(collector.run_collector(), "collector")
        router = Router(
            config,
            spec,
            self.placement,
            membership=replication.membership if replication is not None else None,
            forward_addresses=self._forward_addresses,
            channel_factory=self._dialer.client,
        )
        undo.push_async_callback(router.close)
        # Keys a rule change left here: hand them to their owners, then erase them.
        handoff = Handoff(engine, router, self._stub, confirm=not self._purge_disallowed)
        if handoff.refused:
            self._spawn(handoff.run_handoff(), "handoff")
        # One interceptor hop per call; the limiter counts max_concurrent_rpcs.
        wrappers = (self.metrics.wrap, self._limiter.wrap, MalformedRequests().wrap)
        server = grpc.aio.server(
            options=server_options(self._max_message), interceptors=[WrapOnce(*wrappers)]
        )
        creds = None
        if config.security.tls is not None:
            creds = tls.server_credentials(config.security.tls, spec.id, require_client_auth=False)
        port = bind(server, spec.listen, creds)
        http = HttpDoor(config, spec.id, self._limiter) if spec.http_listen else None
        http_port = http.bind() if http is not None else 0
        if http is not None:
            undo.push_async_callback(http.stop, 0)
        view = NodeView(
            node_id=spec.id,
            region=spec.region,
            cluster=config.cluster,
            endpoint=endpoint_of(spec.listen, port),
            peer_endpoint=endpoint_of(
                spec.peer_listen, replication.peer_port if replication is not None else 0
            ),
            metrics_endpoint=lambda: endpoint_of(spec.metrics_listen, self.metrics.port),
            sync_writes=config.storage.sync_writes,
            engine=engine,
            senders=senders,
            peer_health=peer_health,
            sync_state=sync_state,
            collector=collector,
            router=router,
            feed=feed,
            refusals=self.refusals,
            handoff=handoff,
            limiter=self._limiter,
            http_endpoint=endpoint_of(spec.http_listen, http_port) if http else "",
            http_inflight=(lambda: http.inflight) if http is not None else None,
            pace=replication.pace if replication is not None else None,
        )
        levels = request_levels(engine, router, config, replication, senders)  # SESSION, receipts
        drain = StreamDrain(spec.id)
        coordinator = Coordinator(
            engine, router, committer=committer, feed=feed, watch=config.watch, drain=drain,
            **levels,
        )  # fmt: skip
        self._spawn(coordinator.run_feed_trimmer(), "feed-trimmer")
        cluster_service = ClusterService(config, view, engine, self._may_hold, self.auth)
        recorder = self.metrics.operation_recorder()  # KV.Stream's operations
        kv_service = KVService(
            coordinator, self.auth, config.limits, recorder, drain, self._limiter
        )  # each KV.Stream operation counts as one of its client's calls in flight
        add_client_services(server, kv_service, cluster_service, self._health)
        await server.start()
        undo.push_async_callback(server.stop, 0)
        undo.push_async_callback(self._health.enter_graceful_shutdown)
        if http is not None:
            await http.start(coordinator, cluster_service, self.auth, self.metrics)
        self.metrics.watch(view)
        if spec.metrics_listen:
            self.metrics.serve(spec.metrics_listen)
        await set_health(self._health, True)
        # A full disk: NOT_SERVING and writes refused until RocksDB is reopened in place.
        self._spawn(run_storage_recovery(engine, partial(set_health, self._health)), "storage")
        return _Running(
            engine, feed, committer, replication, collector, router, server, http, view, drain
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.spec.id}:{name}")
        task.add_done_callback(log_task_death)
        self._tasks.append(task)

    def _stub(self, peer: str) -> replication_pb2_grpc.ReplicationStub:
        return replication_pb2_grpc.ReplicationStub(self._dialer.peer(peer))

    def _may_hold(self, key: bytes) -> bool:
        """May this node hold ``key`` (data residency)?"""
        return self.placement.allows(key, self.spec.region)

    def _placements_with(self, peer: str) -> list[bytes]:
        """Placements that both this node and ``peer`` may hold."""
        regions = {self.spec.region, self.config.node(peer).region}
        return self.placement.placements_shared_by(regions)

    # -- stop ------------------------------------------------------------------

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Drain in-flight calls, ship what the peers can take, then close RocksDB.

        Idempotent: stopping a node that is not running does nothing.
        """
        running, self._running = self._running, None
        if running is None:
            return
        await self._health.enter_graceful_shutdown()
        running.drain.start()  # else an idle Watch or KV.Stream holds the stop for grace_s
        http_stopped = running.http.stop(grace_s) if running.http else asyncio.sleep(0)
        await asyncio.gather(running.server.stop(grace_s), http_stopped)
        if running.committer is not None:
            await running.committer.drain()
        if grace_s > 0 and running.replication is not None:
            await flush_to_peers(
                running.engine, running.replication.senders, min(grace_s, DEFAULT_PEER_FLUSH_S)
            )
        await self._cancel_tasks()
        if running.replication is not None:
            await running.replication.peer_server.stop(min(grace_s, 1.0))
        await self._dialer.close()
        await running.router.close()
        self.metrics.close()
        self._publisher.close()
        running.engine.close()
        log.info("node %s stopped", self.spec.id)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
