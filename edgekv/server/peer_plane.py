"""The peer plane of a node: how ``Node.start`` serves the peer port and starts replication.

Split from node.py (which keeps the order of the whole start-up) so that each stays
readable: the peer server (Replication service, its authenticator and bounds), then
membership (heartbeats), anti-entropy, one sender per peer, the log trimmer and the
release of quarantined records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from edgekv import tls
from edgekv.cluster.membership import Membership
from edgekv.cluster.placement import PlacementRules
from edgekv.config.model import ClusterConfig, NodeSpec
from edgekv.coordinator.levels import new_frontier
from edgekv.replication.antientropy import AntiEntropy
from edgekv.replication.changefeed import ChangeFeed
from edgekv.replication.frontier import AppliedFrontier
from edgekv.replication.pacecontrol import PaceController, default_floor, run_lag_probe
from edgekv.replication.reconcile import SyncStats
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.sender import PeerSender, SenderSettings
from edgekv.replication.trimmer import LogTrimmer
from edgekv.server.channels import Dialer, bind, server_options
from edgekv.server.interceptors import MalformedRequests
from edgekv.server.peer_auth import PeerAuthenticator
from edgekv.server.peer_service import PeerService
from edgekv.storage.engine import Engine
from edgekv.storage.quarantine import run_quarantine_release
from edgekv.v1 import replication_pb2, replication_pb2_grpc


@dataclass(frozen=True, slots=True)
class PeerPlane:
    """The peer plane of a running node (a node without peers has none)."""

    peer_server: grpc.aio.Server
    peer_port: int
    membership: Membership
    antientropy: AntiEntropy
    senders: dict[str, PeerSender]  # peer id -> its sender, in cluster-file order
    frontier: AppliedFrontier  # per origin, how far its writes are applied here in order
    pace: PaceController  # anti-entropy's pace, yielding to the loop's other work


class PeerPlaneStarter:
    """What ``Node`` needs to start its peer plane; ``Node`` inherits it."""

    config: ClusterConfig
    spec: NodeSpec
    placement: PlacementRules
    peer_ids: list[str]
    refusals: PeerRefusals
    _dialer: Dialer
    _max_message: int
    _peer_secret: bytes | None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        raise NotImplementedError

    def _stub(self, peer: str) -> replication_pb2_grpc.ReplicationStub:
        raise NotImplementedError

    def _may_hold(self, key: bytes) -> bool:
        raise NotImplementedError

    def _placements_with(self, peer: str) -> list[bytes]:
        raise NotImplementedError

    async def _start_replication(
        self, engine: Engine, feed: ChangeFeed, undo: contextlib.AsyncExitStack
    ) -> PeerPlane:
        """Serve the peer port, then start heartbeats, anti-entropy, senders and the trimmer."""
        config, spec = self.config, self.spec
        assert spec.peer_listen  # checked in __init__
        settings = config.replication
        hello = replication_pb2.PeerHello(node_id=spec.id, cluster=config.cluster)
        senders: dict[str, PeerSender] = {}

        def on_synced(peer: str, stats: SyncStats) -> None:
            frontier.on_synced(peer, antientropy.state[peer].synced_from_ms)
            sender = senders.get(peer)
            if sender is not None and sender.needs_repair:
                sender.repaired()

        antientropy = AntiEntropy(
            engine,
            hello=hello,
            peers=self.peer_ids,
            stub_for=self._stub,
            placements_with=self._placements_with,
            interval_s=settings.antientropy_interval_s,
            may_hold=self._may_hold,
            refusals=self.refusals,
            on_synced=on_synced,
            page_bytes=self._max_message,
            bytes_per_s=settings.antientropy_bytes_per_s,
        )
        # The pace of repair follows the loop's lateness (replication/pacecontrol.py).
        pace = PaceController(
            antientropy.pacer,
            max_bytes_per_s=settings.antientropy_bytes_per_s,
            min_bytes_per_s=settings.antientropy_min_bytes_per_s
            or default_floor(settings.antientropy_bytes_per_s),
            lag_target_s=settings.antientropy_lag_target_ms / 1000.0,
        )
        peer_service = PeerService(
            engine,
            node_id=spec.id,
            cluster=config.cluster,
            node_regions={n.id: n.region for n in config.nodes},
            placement=self.placement,
            authenticator=PeerAuthenticator(
                cluster=config.cluster,
                mutual_tls=config.security.tls is not None,
                secret=self._peer_secret,
            ),
            refusals=self.refusals,
            page_bytes=self._max_message,
            pacer=antientropy.pacer,  # one budget for anti-entropy bytes, in and out
            turns=antientropy.turns,  # who is syncing with this node (syncturns.py)
            frontier=(frontier := new_frontier(engine, self.peer_ids, antientropy.trigger)),
        )
        peer_server = grpc.aio.server(
            options=server_options(self._max_message * 4),
            interceptors=[MalformedRequests()],
            maximum_concurrent_rpcs=config.limits.max_peer_concurrent_rpcs,
        )
        replication_pb2_grpc.add_ReplicationServicer_to_server(peer_service, peer_server)
        creds = None
        if config.security.tls is not None:
            # Mutual TLS: only certificates signed by the cluster CA may replicate.
            creds = tls.server_credentials(config.security.tls, spec.id, require_client_auth=True)
        peer_port = bind(peer_server, spec.peer_listen, creds)
        await peer_server.start()
        undo.push_async_callback(peer_server.stop, 0)
        membership = Membership(
            hello=hello,
            peers=self.peer_ids,
            stub_for=self._stub,
            interval_s=settings.heartbeat_interval_s,
            clock=engine.clock,
        )
        sender_settings = SenderSettings(
            batch_entries=settings.batch_entries,
            max_batch_bytes=self._max_message,
            max_inflight=settings.max_inflight_batches,
        )
        for peer in self.peer_ids:
            region = config.node(peer).region
            sender = PeerSender(
                engine,
                peer_id=peer,
                address=self._dialer.peer_address(peer),
                hello=hello,
                allowed=lambda key, region=region: self.placement.allows(key, region),  # type: ignore[misc]
                channel_factory=lambda _addr, peer=peer: self._dialer.peer(peer),  # type: ignore[misc]
                settings=sender_settings,
                on_repair_needed=antientropy.trigger,
            )
            senders[peer] = sender
            feed.add_waker(sender.wake)
            self._spawn(sender.run_sender(), f"sender-{peer}")
        trimmer = LogTrimmer(
            engine,
            lambda: (s.acked_seq for s in senders.values()),
            interval_s=settings.log_trim_interval_s,
            retention_entries=settings.log_retention_entries,
            retention_s=settings.log_retention_s,
        )
        self._spawn(membership.run_heartbeats(), "heartbeats")
        self._spawn(antientropy.run_antientropy(), "antientropy")
        self._spawn(run_lag_probe(pace), "lag-probe")
        self._spawn(trimmer.run_log_trimmer(), "log-trimmer")
        held, interval_s = (lambda: engine.quarantine), membership.interval_s
        self._spawn(run_quarantine_release(held, engine.apply_many, interval_s), "quarantine")
        return PeerPlane(peer_server, peer_port, membership, antientropy, senders, frontier, pace)
