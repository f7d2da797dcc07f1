"""SESSION reads and propagation receipts on a three-region cluster with emulated WAN delay.

Three nodes (fra-1, iad-1, nrt-1), every link delayed by fault proxies; a
write at one PoP is read at another at once. SESSION must see it every time
(the PoP waits for replication, or forwards to the origin); LOCAL may not.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edgekv.cluster.routing import FORWARDED_BY
from edgekv.consistency import decode_token, token_of_versions
from edgekv.errors import InvalidArgument, Unavailable
from edgekv.local.inprocess import ClusterFactory, InProcessCluster
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

# Replication to another PoP takes at least this long, while a read sent right
# after the ack arrives within a millisecond: every trial races replication.
# (15 ms made each trial cost ~20 ms of waiting and checked nothing more.)
ONE_WAY_MS = 5.0
SESSION = common_pb2.CONSISTENCY_SESSION
TRIALS = 1000


def delay_all(cluster: InProcessCluster, one_way_ms: float) -> None:
    ids = cluster.node_ids
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            cluster.set_delay(a, b, one_way_ms)


async def test_session_read_at_another_pop_sees_the_write_every_time(
    cluster: InProcessCluster,
) -> None:
    delay_all(cluster, ONE_WAY_MS)
    writer = cluster.client("fra-1")
    reader = cluster.client("nrt-1", consistency="session")
    local = cluster.client("nrt-1")
    await writer.put(b"warm", b"v")
    await reader.get(b"warm")
    misses = 0
    for i in range(TRIALS):
        key = f"s/{i}".encode()
        wrote = await writer.put(key, b"v%d" % i)
        reader.observe_token(wrote.session_token)  # handed from process to process
        entry = await reader.get(key)
        assert entry is not None, f"trial {i}: SESSION read missed the write"
        assert entry.version >= wrote.version, f"trial {i}: older version read"
    for i in range(50):  # LOCAL, same pattern: nothing waits for replication
        key = f"l/{i}".encode()
        await writer.put(key, b"v")
        if await local.get(key) is None:
            misses += 1
    print(f"SESSION: {TRIALS}/{TRIALS} saw the write; LOCAL missed {misses} of 50")
    assert misses > 0  # with 5 ms of one-way delay a LOCAL read right after misses


async def test_session_token_covers_writes_the_client_made_and_read(
    cluster: InProcessCluster,
) -> None:
    client = cluster.client("fra-1", consistency="session")
    assert client.session_token == b""
    wrote = await client.put(b"t/1", b"a")
    assert decode_token(wrote.session_token) == {"fra-1": wrote.version.timestamp}
    assert decode_token(client.session_token) == {"fra-1": wrote.version.timestamp}
    other = cluster.client("iad-1", consistency="session")
    entry = await other.get(b"t/1")  # no token yet: reads LOCAL, starts a session
    if entry is not None:
        assert decode_token(other.session_token) == {"fra-1": wrote.version.timestamp}
    local = cluster.client("iad-1")
    await local.get(b"t/1")
    assert local.session_token == b""  # LOCAL reads neither send nor build tokens


async def test_session_read_forwarded_to_the_origin_when_replication_is_cut(
    cluster: InProcessCluster,
) -> None:
    writer = cluster.client("fra-1")
    reader = cluster.client("nrt-1")
    await writer.put(b"warm", b"v")
    await reader.get(b"warm", consistency="session")
    cluster.links[("fra-1", "nrt-1")].cut()  # fra's replication stream to nrt only
    wrote = await writer.put(b"cut/1", b"fresh")
    reader.observe_token(wrote.session_token)
    assert await reader.get(b"cut/1") is None  # LOCAL: not replicated
    entry = await reader.get(b"cut/1", consistency="session")
    assert entry is not None and entry.value == b"fresh"
    assert entry.served_by == "fra-1"


async def test_forwarded_session_read_not_covered_is_unavailable_naming_the_origin(
    cluster: InProcessCluster,
) -> None:
    writer = cluster.client("fra-1")
    await writer.put(b"warm", b"v")
    cluster.links[("fra-1", "nrt-1")].cut()
    wrote = await writer.put(b"cut/2", b"fresh")
    request = kv_pb2.GetRequest(
        key=b"cut/2", consistency=SESSION, session_token=wrote.session_token
    )
    async with grpc.aio.insecure_channel(cluster.endpoint("nrt-1")) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(request, metadata=((FORWARDED_BY, "iad-1"),), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fra-1" in (info.value.details() or "")
    assert "session_wait_ms" in (info.value.details() or "")


async def test_session_token_survives_a_restart_of_the_reading_pop(
    cluster: InProcessCluster,
) -> None:
    writer = cluster.client("fra-1")
    wrote = await writer.put(b"r/1", b"before")
    await cluster.wait_until(
        lambda: cluster.engine("iad-1").get_item(b"r/1") is not None,
        timeout_s=20,
        what="r/1 replicated to iad-1",
    )
    await cluster.wait_until(
        lambda: cluster.metric("fra-1", "edgekv_replication_lag_entries", peer="iad-1") == 0,
        timeout_s=20,
        what="iad-1 acknowledged r/1",
    )
    await cluster.restart("iad-1")
    # The restarted PoP cannot reach the origin: only its persisted frontier can
    # tell it that it has applied the token (else: wait, forward, UNAVAILABLE).
    cluster.cut("fra-1", "iad-1")
    reader = cluster.client("iad-1", session_token=wrote.session_token)
    entry = await reader.get(b"r/1", consistency="session")
    assert entry is not None and entry.value == b"before" and entry.served_by == "iad-1"


async def test_receipts_name_the_pops_that_applied_the_write(cluster: InProcessCluster) -> None:
    cluster.set_delay("fra-1", "iad-1", 5)
    cluster.set_delay("fra-1", "nrt-1", 60)
    writer = cluster.client("fra-1")
    await writer.put(b"warm", b"v")
    one = await writer.put(b"p/1", b"v", await_replicas=1)
    assert [r.node_id for r in one.receipts] == ["iad-1"] and one.not_applied_by == ()
    both = await writer.put(b"p/2", b"v", await_replicas=2)
    assert [r.node_id for r in both.receipts] == ["iad-1", "nrt-1"]
    assert [r.region for r in both.receipts] == ["us-east", "ap-northeast"]
    assert both.receipts[0].applied_after_ms <= both.receipts[1].applied_after_ms
    assert cluster.engine("nrt-1").get_item(b"p/2") is not None  # applied when answered
    region = await writer.delete(b"p/1", await_regions=["ap-northeast"])
    assert "nrt-1" in [r.node_id for r in region.receipts]


async def test_receipts_timeout_lists_the_pop_that_did_not_apply(
    cluster: InProcessCluster,
) -> None:
    writer = cluster.client("fra-1")
    await writer.put(b"warm", b"v")
    cluster.links[("fra-1", "nrt-1")].cut()
    result = await writer.put(b"p/3", b"v", await_replicas=2, await_timeout_ms=500)
    assert [r.node_id for r in result.receipts] == ["iad-1"]
    assert result.not_applied_by == ("nrt-1",)
    assert (await writer.get(b"p/3")) is not None  # acknowledged all the same


async def test_await_replicas_bad_requests_name_the_limit(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(placement=(("eu/", ["eu-west"]),))
    writer = cluster.client("fra-1")
    with pytest.raises(InvalidArgument, match="count is 3; at most 2"):
        await writer.put(b"g/1", b"v", await_replicas=3)
    with pytest.raises(InvalidArgument, match="unknown regions mars"):
        await writer.put(b"g/1", b"v", await_regions=["mars"])
    with pytest.raises(InvalidArgument, match="us-east, which may not hold"):
        await writer.put(b"eu/1", b"v", await_regions=["us-east"])
    with pytest.raises(InvalidArgument, match="at most 0 other PoPs"):
        await writer.put(b"eu/1", b"v", await_replicas=1)
    assert await writer.get(b"g/1") is None  # refused before anything was written


async def test_bad_session_token_is_invalid_argument(cluster: InProcessCluster) -> None:
    async with grpc.aio.insecure_channel(cluster.endpoint("iad-1")) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(
                kv_pb2.GetRequest(key=b"k", consistency=SESSION, session_token=b"\xff\x00junk"),
                timeout=10,
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "session token" in (info.value.details() or "")
    big = token_of_versions([(1, f"n{i}") for i in range(300)])
    with pytest.raises(InvalidArgument, match="names 300 origins; the limit is 256"):
        cluster.client("iad-1").observe_token(big)


async def test_session_scan_and_batch_get_see_the_write(cluster: InProcessCluster) -> None:
    delay_all(cluster, ONE_WAY_MS)
    writer = cluster.client("fra-1")
    reader = cluster.client("nrt-1", consistency="session")
    await writer.put(b"warm", b"v")
    for i in range(20):
        wrote = await writer.put(b"sc/%03d" % i, b"v")
        reader.observe_token(wrote.session_token)
        items = [e async for e in reader.scan(b"sc/")]
        assert len(items) == i + 1
        wrote = await writer.put(b"bg/%03d" % i, b"v")
        reader.observe_token(wrote.session_token)
        found = await reader.get_many([b"bg/%03d" % i, b"warm"])
        assert found[0] is not None


async def test_unavailable_is_raised_when_no_pop_has_the_token(
    cluster: InProcessCluster,
) -> None:
    writer = cluster.client("fra-1")
    await writer.put(b"warm", b"v")
    cluster.partition(["fra-1"], ["iad-1", "nrt-1"])
    wrote = await writer.put(b"iso/1", b"v")
    reader = cluster.client("nrt-1", session_token=wrote.session_token, timeout_s=5.0)
    with pytest.raises(Unavailable, match="token's writes from fra-1"):
        await reader.get(b"iso/1", consistency="session")


PINNED_REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))
PINNED_NODES = (("fra-1", "eu-west"), ("fra-2", "eu-west"), ("iad-1", "us-east"))


async def test_forwarded_pinned_write_awaits_replicas_at_its_holder(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(
        regions=PINNED_REGIONS, nodes=PINNED_NODES, placement=(("eu/", ["eu-west"]),)
    )
    iad = cluster.client("iad-1")
    done = await iad.put(b"eu/1", b"v", await_replicas=1)
    assert done.served_by in ("fra-1", "fra-2")
    assert [r.node_id for r in done.receipts] == ["fra-2" if done.served_by == "fra-1" else "fra-1"]
    with pytest.raises(InvalidArgument, match="us-east, which may not hold"):
        await iad.put(b"eu/1", b"v", await_regions=["us-east"])
    entry = await iad.get(b"eu/1", consistency="session")  # the token covers the write
    assert entry is not None and entry.served_by in ("fra-1", "fra-2")
    assert cluster.engine("iad-1").get_item(b"eu/1") is None  # never stored outside the EU


async def test_frontier_gap_past_log_retention_heals_after_anti_entropy(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(replication={"log_retention_entries": 20})
    fra, nrt = cluster.client("fra-1"), cluster.client("nrt-1")
    wrote = await fra.put(b"gap/warm", b"v")
    nrt.observe_token(wrote.session_token)
    first = await nrt.get(b"gap/warm", consistency="session")
    assert first is not None
    cluster.links[("fra-1", "nrt-1")].cut()  # fra's log shipping to nrt stops
    for i in range(100):
        wrote = await fra.put(b"gap/%03d" % i, b"v")
    await cluster.wait_until(
        lambda: cluster.engine("fra-1").first_log_seq() > 60,
        timeout_s=30,
        what="fra-1's log trimmed past nrt-1's cursor",
    )
    cluster.links[("fra-1", "nrt-1")].restore()  # the stream resumes past a gap
    nrt.observe_token(wrote.session_token)

    async def served_at_nrt() -> bool:
        entry = await nrt.get(b"gap/099", consistency="session")
        return entry is not None and entry.served_by == "nrt-1"

    deadline = asyncio.get_running_loop().time() + 30
    while not await served_at_nrt():  # forwarded to fra-1 until the gap is repaired
        assert asyncio.get_running_loop().time() < deadline, "nrt-1's frontier never healed"
        await asyncio.sleep(0.2)
