"""The Cluster gRPC service: what this node is, and the cluster as it sees it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc

from edgekv import native
from edgekv._version import __version__
from edgekv.cluster.audit import AuditReport, audit_column_families
from edgekv.errors import EdgeKVError
from edgekv.server.auth import Authorizer
from edgekv.server.kv_service import abort_with
from edgekv.storage.backup import create_checkpoint
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc

if TYPE_CHECKING:
    from edgekv.server.node import Node


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    """Status and Members of one node; reads the node's live state, changes nothing."""

    def __init__(self, node: Node, auth: Authorizer | None = None) -> None:
        self._node = node
        self._auth = auth
        self._started = time.monotonic()
        config = node.config
        self._regions = [
            cluster_pb2.Region(name=r.name, latitude=r.location[0], longitude=r.location[1])
            for r in config.regions
        ]
        self._placement = [
            cluster_pb2.PlacementRule(prefix=rule.prefix, regions=list(rule.regions))
            for rule in config.placement
        ]

    async def _authorize(self, context: grpc.aio.ServicerContext, scope: str) -> None:
        if self._auth is None:
            return
        try:
            self._auth.authorize(context, scope)
        except EdgeKVError as exc:
            await abort_with(context, exc)

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.StatusResponse:
        await self._authorize(context, "read")
        node = self._node
        engine = node.engine
        assert engine is not None
        return cluster_pb2.StatusResponse(
            node_id=node.spec.id,
            region=node.spec.region,
            cluster=node.config.cluster,
            uptime_s=time.monotonic() - self._started,
            key_count=engine.approximate_key_count(),
            read_path=native.ACTIVE,
            server_version=__version__,
            last_seq=engine.last_seq,
            hlc_timestamp=engine.clock.last,
            sync_writes=engine.settings.sync_writes,
            metrics_endpoint=node.metrics_endpoint,
        )

    async def Members(
        self, request: cluster_pb2.MembersRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.MembersResponse:
        await self._authorize(context, "read")
        node = self._node
        members = []
        for spec in node.config.nodes:
            if spec.id == node.spec.id:
                members.append(
                    cluster_pb2.Member(
                        node_id=spec.id,
                        region=spec.region,
                        endpoint=node.endpoint,
                        peer_endpoint=node.peer_endpoint,
                        is_self=True,
                        reachable=True,
                        last_seen_s=0.0,
                    )
                )
                continue
            health = node.membership.peers[spec.id] if node.membership else None
            sender = node.senders.get(spec.id)
            members.append(
                cluster_pb2.Member(
                    node_id=spec.id,
                    region=spec.region,
                    endpoint=spec.listen,
                    peer_endpoint=spec.peer_listen or "",
                    is_self=False,
                    reachable=bool(health and health.reachable),
                    rtt_ms=health.rtt_ms if health else 0.0,
                    lag_entries=sender.lag_entries() if sender else 0,
                    lag_seconds=sender.lag_seconds() if sender else 0.0,
                    last_seen_s=health.last_seen_s() if health else -1.0,
                    last_error=(health.last_error if health else "")
                    or (sender.last_error if sender else ""),
                )
            )
        return cluster_pb2.MembersResponse(
            cluster=node.config.cluster,
            self_id=node.spec.id,
            regions=self._regions,
            members=members,
            placement=self._placement,
        )

    async def Audit(
        self, request: cluster_pb2.AuditRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.AuditResponse:
        await self._authorize(context, "admin")
        node = self._node
        engine = node.engine
        assert engine is not None
        region = node.spec.region
        data, log, index = engine.column_families()
        report = AuditReport(node.spec.id, region)
        # A full walk of the database: off the event loop.
        await asyncio.to_thread(
            audit_column_families,
            report,
            data,
            log,
            index,
            lambda key: node.placement.allows(key, region),
        )
        return cluster_pb2.AuditResponse(
            node_id=report.node_id,
            region=report.region,
            checked=report.checked,
            violations=report.total_violations,
            samples=[
                cluster_pb2.AuditViolation(column_family=cf, key=key) for cf, key in report.samples
            ],
        )

    async def Backup(
        self, request: cluster_pb2.BackupRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.BackupResponse:
        await self._authorize(context, "admin")
        engine = self._node.engine
        assert engine is not None
        last_seq, hlc = engine.last_seq, engine.clock.last
        try:
            # Flush + checkpoint touch the disk: off the event loop.
            path = await asyncio.to_thread(create_checkpoint, engine, request.dest_path)
        except EdgeKVError as exc:
            await abort_with(context, exc)
        return cluster_pb2.BackupResponse(path=str(path), last_seq=last_seq, hlc_timestamp=hlc)
