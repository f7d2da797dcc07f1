"""The Cluster gRPC service: what this node is, and the cluster as it sees it."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import grpc

from edgekv import native
from edgekv._version import __version__
from edgekv.cluster.audit import AuditReport, audit_column_families
from edgekv.config.model import ClusterConfig
from edgekv.server.auth import Authorizer
from edgekv.server.status import grpc_errors
from edgekv.server.view import NodeView
from edgekv.storage.backup import create_checkpoint
from edgekv.storage.engine import Engine
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    """Status and Members read the node's view and change nothing; Audit and Backup
    (admin scope) read the engine directly.

    ``may_hold(key)``: may this node hold ``key`` (its placement rules)?
    """

    def __init__(
        self,
        config: ClusterConfig,
        view: NodeView,
        engine: Engine,
        may_hold: Callable[[bytes], bool],
        auth: Authorizer | None = None,
    ) -> None:
        self._config = config
        self._view = view
        self._engine = engine
        self._may_hold = may_hold
        self._auth = auth
        self._started = time.monotonic()
        self._regions = [
            cluster_pb2.Region(name=r.name, latitude=r.location[0], longitude=r.location[1])
            for r in config.regions
        ]
        self._placement = [
            cluster_pb2.PlacementRule(
                prefix=rule.prefix, regions=list(rule.regions), home=rule.home
            )
            for rule in config.placement
        ]

    def _authorize(self, context: grpc.aio.ServicerContext, scope: str) -> None:
        if self._auth is not None:
            self._auth.authorize(context, scope)

    @grpc_errors
    async def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.StatusResponse:
        self._authorize(context, "read")
        return self.status_response()

    @grpc_errors
    async def Members(
        self, request: cluster_pb2.MembersRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.MembersResponse:
        self._authorize(context, "read")
        return self.members_response()

    def status_response(self) -> cluster_pb2.StatusResponse:
        """This node now (any door; the caller was authorized for ``read``)."""
        view = self._view
        engine = view.engine_stats()
        return cluster_pb2.StatusResponse(
            node_id=view.node_id,
            region=view.region,
            cluster=view.cluster,
            uptime_s=time.monotonic() - self._started,
            key_count=engine.key_count,
            read_path=native.ACTIVE,
            server_version=__version__,
            last_seq=engine.last_seq,
            hlc_timestamp=engine.hlc_timestamp,
            sync_writes=view.sync_writes,
            metrics_endpoint=view.metrics_endpoint,
        )

    def members_response(self) -> cluster_pb2.MembersResponse:
        """The cluster as this node sees it (any door; the caller was authorized for ``read``)."""
        view = self._view
        peers = {peer.peer_id: peer for peer in view.peer_stats()}
        scheme = "https" if self._config.security.tls is not None else "http"

        def http_endpoint(address: str | None) -> str:
            return f"{scheme}://{address}" if address else ""

        members = []
        for spec in self._config.nodes:
            if spec.id == view.node_id:
                members.append(
                    cluster_pb2.Member(
                        node_id=spec.id,
                        region=spec.region,
                        endpoint=view.endpoint,
                        peer_endpoint=view.peer_endpoint,
                        http_endpoint=http_endpoint(view.http_endpoint),
                        is_self=True,
                        reachable=True,
                        last_seen_s=0.0,
                        replication_connected=True,
                    )
                )
                continue
            peer = peers[spec.id]
            members.append(
                cluster_pb2.Member(
                    node_id=spec.id,
                    region=spec.region,
                    endpoint=spec.listen,
                    peer_endpoint=spec.peer_listen or "",
                    http_endpoint=http_endpoint(spec.http_listen),
                    is_self=False,
                    reachable=peer.reachable,
                    rtt_ms=peer.rtt_ms,
                    lag_entries=peer.lag_entries,
                    lag_seconds=peer.lag_seconds,
                    last_seen_s=peer.last_seen_s,
                    last_error=peer.health_error or peer.sender_error,
                    replication_connected=peer.connected,
                )
            )
        return cluster_pb2.MembersResponse(
            cluster=view.cluster,
            self_id=view.node_id,
            regions=self._regions,
            members=members,
            placement=self._placement,
        )

    @grpc_errors
    async def Audit(
        self, request: cluster_pb2.AuditRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.AuditResponse:
        self._authorize(context, "admin")
        view, engine = self._view, self._engine
        data, log, index = engine.column_families()
        report = AuditReport(view.node_id, view.region)
        # A full walk of the database: off the event loop.
        await asyncio.to_thread(
            audit_column_families,
            report,
            data,
            log,
            index,
            self._may_hold,
            engine.meta_family(),
            engine.feed.column_family,
        )
        return cluster_pb2.AuditResponse(
            node_id=report.node_id,
            region=report.region,
            checked=report.checked,
            checked_by_column_family=report.checked_by,
            violations=report.total_violations,
            samples=[
                cluster_pb2.AuditViolation(column_family=cf, key=key) for cf, key in report.samples
            ],
        )

    @grpc_errors
    async def Backup(
        self, request: cluster_pb2.BackupRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.BackupResponse:
        self._authorize(context, "admin")
        engine = self._engine
        last_seq, hlc = engine.last_seq, engine.clock.last
        # Flush + checkpoint touch the disk: off the event loop.
        peers = self._view.peer_stats()
        # Complete up to the oldest last complete sync with a peer (backup.py).
        complete_as_of_ms = min((p.synced_from_ms for p in peers), default=None)
        path = await asyncio.to_thread(
            functools.partial(
                create_checkpoint,
                engine,
                request.dest_path,
                region=self._view.region,
                complete_as_of_ms=complete_as_of_ms,
            )
        )
        return cluster_pb2.BackupResponse(path=str(path), last_seq=last_seq, hlc_timestamp=hlc)
