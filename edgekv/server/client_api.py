"""What the node's client gRPC port serves: KV, Cluster, health and reflection.

The HTTP door (edgekv/http) serves the same KV and Cluster services over
Connect and gRPC-Web; health and reflection are gRPC only.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from edgekv.server.cluster_service import ClusterService
from edgekv.server.kv_service import KVService
from edgekv.server.stream_wire import add_kv_service
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2


async def set_health(health: health_aio.HealthServicer, writable: bool) -> None:
    """SERVING for the node ("") and its services; while its store refuses writes
    (storage/recovery.py) the node and KV answer NOT_SERVING, Cluster stays SERVING.
    Ignored once the node began a graceful shutdown."""
    serving = health_pb2.HealthCheckResponse.SERVING
    status = serving if writable else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", "edgekv.v1.KV"):
        await health.set(service, status)
    await health.set("edgekv.v1.Cluster", serving)


def add_client_services(
    server: grpc.aio.Server,
    kv: KVService,
    cluster: ClusterService,
    health: health_aio.HealthServicer,
) -> None:
    """Register the client services on ``server`` (before it starts)."""
    add_kv_service(kv, server)  # the generated registration, with KV.Stream's own codec
    cluster_pb2_grpc.add_ClusterServicer_to_server(cluster, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
