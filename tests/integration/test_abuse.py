"""Floods of calls and of bad input: RESOURCE_EXHAUSTED for the flooder, service for the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from edgekv import Client, Put
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration


def test_flood_gets_resource_exhausted_node_and_replication_keep_going(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=(("r1", 0.0, 0.0), ("r2", 1.0, 1.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")),
        extra={"limits": {"max_inflight_per_client": 1}},
    )
    with LocalCluster(path) as cluster:
        cluster.start()
        with Client(cluster.endpoint("a-1"), discover=False) as c:
            for i in range(0, 20_000, 1000):
                c.write([Put(b"f/%06d" % j, b"x" * 100) for j in range(i, i + 1000)])

        async def flood() -> list[grpc.StatusCode]:
            async with grpc.aio.insecure_channel(cluster.endpoint("a-1")) as ch:
                kv = kv_pb2_grpc.KVStub(ch)

                async def one() -> grpc.StatusCode:
                    try:
                        await kv.Scan(kv_pb2.ScanRequest(prefix=b"f/", limit=10_000), timeout=30)
                        return grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        assert "max_inflight_per_client" in (exc.details() or "")
                        return exc.code()

                return await asyncio.gather(*(one() for _ in range(100)))

        codes = asyncio.run(flood())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
        # A flood of malformed and invalid requests fails each call, not the node.
        with grpc.insecure_channel(cluster.endpoint("a-1")) as ch:
            raw = ch.unary_unary("/edgekv.v1.KV/Put")
            for _ in range(200):
                with pytest.raises(grpc.RpcError):
                    raw(b"\xff\xfe garbage")
            kv = kv_pb2_grpc.KVStub(ch)
            for _ in range(200):
                with pytest.raises(grpc.RpcError):
                    kv.Put(kv_pb2.PutRequest(key=b"", value=b"x"))
            kv.Put(kv_pb2.PutRequest(key=b"after/flood", value=b"ok"))
        with Client(cluster.endpoint("b-1"), discover=False) as b:
            entry = wait_until(lambda: b.get("after/flood"), timeout_s=15, what="replication")
            assert entry.value == b"ok"
