"""Home-mode prefixes on a three-region cluster with emulated WAN delay (issue 13).

"ctr/" is homed at fra-1 and may live in every region: every write to it, from
any PoP, is applied by fra-1 and replicated from there; conditions (CAS) and
STRONG reads are served by fra-1. STRONG reads go through the raw gRPC field
(``GetRequest.consistency``), the SDK's conditions through ``put(if_version=)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from edgekv.client import AsyncClient, ConditionFailed, Version
from edgekv.errors import FailedPrecondition, Unavailable
from edgekv.local.inprocess import ClusterFactory, InProcessCluster
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, kv_pb2, kv_pb2_grpc

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
ALL = ["eu-west", "us-east", "ap-northeast"]
HOME = "fra-1"
PLACEMENT = (("ctr/", ALL, HOME), ("loose/", ALL))
STRONG = common_pb2.CONSISTENCY_STRONG


class StrongReader:
    """STRONG Gets over a raw gRPC channel to one node (the SDK argument is another branch's)."""

    def __init__(self, endpoint: str) -> None:
        self._channel = grpc.aio.insecure_channel(endpoint)
        self._stub = kv_pb2_grpc.KVStub(self._channel)

    async def get(self, key: bytes) -> kv_pb2.GetResponse:
        return await self._stub.Get(kv_pb2.GetRequest(key=key, consistency=STRONG), timeout=30)

    async def close(self) -> None:
        await self._channel.close()


@pytest.fixture
async def homed(make_cluster: ClusterFactory) -> InProcessCluster:
    cluster = await make_cluster(regions=REGIONS, nodes=NODES, placement=PLACEMENT)
    return cluster


@pytest.fixture
async def readers(homed: InProcessCluster) -> AsyncIterator[dict[str, StrongReader]]:
    made = {n: StrongReader(homed.endpoint(n)) for n in homed.node_ids}
    try:
        yield made
    finally:
        for reader in made.values():
            await reader.close()


def wan(cluster: InProcessCluster, one_way_ms: float) -> None:
    for i, a in enumerate(cluster.node_ids):
        for b in cluster.node_ids[i + 1 :]:
            cluster.set_delay(a, b, one_way_ms)


async def test_members_show_the_home(homed: InProcessCluster) -> None:
    async with grpc.aio.insecure_channel(homed.endpoint("nrt-1")) as channel:
        members = await cluster_pb2_grpc.ClusterStub(channel).Members(
            cluster_pb2.MembersRequest(), timeout=10
        )
    homes = {rule.prefix: rule.home for rule in members.placement}
    assert homes == {b"ctr/": HOME, b"loose/": ""}


async def test_concurrent_cas_increments_lose_no_update(
    homed: InProcessCluster, readers: dict[str, StrongReader]
) -> None:
    """1,000 CAS increments of one counter by 12 clients through three PoPs: none lost."""
    wan(homed, 5.0)
    total, workers_per_pop = 1000, 4
    first = await homed.client("iad-1").put(b"ctr/n", b"0", if_absent=True)
    assert first.served_by == HOME
    done = 0
    conflicts = 0

    async def worker(client: AsyncClient, reader: StrongReader) -> None:
        nonlocal done, conflicts
        while done < total:
            current = await reader.get(b"ctr/n")
            version = Version(current.version.timestamp, current.version.origin)
            if done >= total:
                return
            try:
                await client.put(b"ctr/n", b"%d" % (int(current.value) + 1), if_version=version)
            except ConditionFailed as exc:
                assert exc.current_version is not None and exc.current_version != version
                conflicts += 1
                continue
            done += 1

    await asyncio.gather(
        *(
            worker(homed.client(node), readers[node])
            for node in homed.node_ids
            for _ in range(workers_per_pop)
        )
    )
    # Workers stop once `total` increments were acknowledged; a few in flight may land too.
    final = await readers["nrt-1"].get(b"ctr/n")
    assert int(final.value) == done >= total
    assert final.served_by == HOME
    assert conflicts > 0  # they did race
    wan(homed, 0)
    stored = await homed.assert_converged(b"ctr/")
    assert stored[b"ctr/n"][0] == final.value


async def test_strong_read_sees_latest_acknowledged_write_from_any_pop(
    homed: InProcessCluster, readers: dict[str, StrongReader]
) -> None:
    wan(homed, 20.0)  # replication takes a while; LOCAL reads lag, STRONG do not
    writer = homed.client("iad-1")
    for i in range(30):
        ack = await writer.put(b"ctr/latest", b"%d" % i)
        assert ack.served_by == HOME and ack.version.origin == HOME
        for node in ("nrt-1", "iad-1", "fra-1"):
            got = await readers[node].get(b"ctr/latest")
            assert got.found and got.value == b"%d" % i, (node, i)
            assert got.served_by == HOME
            assert (got.version.timestamp, got.version.origin) == tuple(ack.version)


async def test_home_down_writes_unavailable_local_reads_work(
    homed: InProcessCluster, readers: dict[str, StrongReader]
) -> None:
    await homed.client("nrt-1").put(b"ctr/k", b"before")
    await homed.assert_converged(b"ctr/")
    await homed.stop_node(HOME)
    for node in ("iad-1", "nrt-1"):
        client = homed.client(node)
        with pytest.raises(Unavailable, match="node fra-1, the home of prefix 'ctr/'"):
            await client.put(b"ctr/k", b"forked?")
        with pytest.raises(Unavailable, match="fra-1"):
            await client.delete(b"ctr/k")
        entry = await client.get(b"ctr/k")  # LOCAL keeps working
        assert entry is not None and entry.value == b"before" and entry.served_by == node
        with pytest.raises(grpc.aio.AioRpcError) as strong:
            await readers[node].get(b"ctr/k")
        assert strong.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await client.put(b"loose/k", b"fine")).served_by == node  # unhomed: as before
    for node in ("iad-1", "nrt-1"):  # no fork: nothing but the home ever wrote ctr/
        assert homed.engine(node).get_item(b"ctr/k").value == b"before"  # type: ignore[union-attr]
    await homed.start([HOME])
    # Until iad-1's heartbeats see the home back, writes are refused unsent (safe to retry).
    deadline = asyncio.get_running_loop().time() + 30.0
    while True:
        try:
            ack = await homed.client("iad-1").put(b"ctr/k", b"after", if_version=None)
            break
        except Unavailable as exc:
            assert "not applied anywhere" in str(exc), exc
            assert asyncio.get_running_loop().time() < deadline, exc
            await asyncio.sleep(0.2)
    assert ack.served_by == HOME


async def test_conditions_refused_on_keys_without_home(homed: InProcessCluster) -> None:
    client = homed.client("iad-1")
    for key in (b"loose/k", b"global/k"):
        with pytest.raises(FailedPrecondition, match="no single order") as refused:
            await client.put(key, b"v", if_absent=True)
        assert not isinstance(refused.value, ConditionFailed)
        assert "placement[].home" in str(refused.value)
        assert await client.get(key) is None


async def test_condition_failed_carries_current_version_over_grpc(homed: InProcessCluster) -> None:
    ack = await homed.client("nrt-1").put(b"ctr/v", b"1")
    async with grpc.aio.insecure_channel(homed.endpoint("nrt-1")) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Put(
                kv_pb2.PutRequest(
                    key=b"ctr/v", value=b"2", condition=common_pb2.Condition(if_absent=True)
                ),
                timeout=10,
            )
    error = failed.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ctr/v" in (error.details() or "") and str(ack.version.timestamp) in error.details()
    trailers = dict(error.trailing_metadata() or ())
    version = common_pb2.Version.FromString(trailers["edgekv-current-version-bin"])
    assert (version.timestamp, version.origin) == tuple(ack.version)
