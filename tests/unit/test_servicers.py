"""Every RPC of the protos is implemented by our servicers.

grpcio-tools generates servicer base classes whose methods raise
NotImplementedError (edgekv/v1/*_pb2_grpc.py, built from proto/ and not
committed); the node registers subclasses. A method added to a .proto and not
implemented here would answer UNIMPLEMENTED at run time: this catches it.
"""

from __future__ import annotations

import inspect

import pytest

from edgekv.server.cluster_service import ClusterService
from edgekv.server.kv_service import KVService
from edgekv.server.peer_service import PeerService
from edgekv.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
)


@pytest.mark.parametrize(
    ("implementation", "base", "service"),
    [
        (KVService, kv_pb2_grpc.KVServicer, kv_pb2.DESCRIPTOR.services_by_name["KV"]),
        (ClusterService, cluster_pb2_grpc.ClusterServicer,
         cluster_pb2.DESCRIPTOR.services_by_name["Cluster"]),
        (PeerService, replication_pb2_grpc.ReplicationServicer,
         replication_pb2.DESCRIPTOR.services_by_name["Replication"]),
    ],
    ids=["KV", "Cluster", "Replication"],
)  # fmt: skip
def test_every_rpc_is_overridden_with_a_coroutine(
    implementation: type, base: type, service: object
) -> None:
    methods = [m.name for m in service.methods]  # type: ignore[attr-defined]
    assert methods, "the service descriptor lists no methods"
    for name in methods:
        ours = getattr(implementation, name)
        assert ours is not getattr(base, name), f"{implementation.__name__}.{name} not implemented"
        assert inspect.iscoroutinefunction(ours) or inspect.isasyncgenfunction(ours), name
