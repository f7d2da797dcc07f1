"""The request layer on real engines, without gRPC: three nodes in three regions,
their coordinators linked in-process by DirectForwarder (same routing and failover
as over the network), so auth, forwarding, fan-out and merge rules are tested here
once for every front door."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgekv import native
from edgekv.cluster.placement import PlacementRules
from edgekv.cluster.routing import Router
from edgekv.config.loader import parse_config
from edgekv.config.model import ClusterConfig
from edgekv.coordinator import Call, ChangeEvent, Coordinator, DirectForwarder, GetResult
from edgekv.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from edgekv.principal import ANYONE, Principal
from edgekv.replication.changefeed import ChangeFeed
from edgekv.storage.engine import DeleteOp, Engine, EngineSettings, PutOp

NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))


def cluster_config(tmp_path: Path) -> ClusterConfig:
    doc = {
        "cluster": "unit",
        "regions": [
            {"name": "eu-west", "location": [50.1, 8.7]},
            {"name": "us-east", "location": [39.0, -77.5]},
            {"name": "ap-northeast", "location": [35.7, 139.7]},
        ],
        "nodes": [
            {
                "id": node_id,
                "region": region,
                "listen": f"127.0.0.1:{7100 + i}",  # never bound: no server runs here
                "peer_listen": f"127.0.0.1:{7200 + i}",
                "data_dir": f"data/{node_id}",
            }
            for i, (node_id, region) in enumerate(NODES)
        ],
        "placement": [
            {"prefix": "eu/", "regions": ["eu-west"]},
            {"prefix": "jp/", "regions": ["ap-northeast"]},
            {"prefix": "eu/us/", "regions": ["us-east"]},  # nested inside an EU prefix
        ],
        "security": {"auth": {"mode": "disabled"}},
    }
    return parse_config(doc, tmp_path)


class InProcessNodes:
    """Engines, routers and coordinators of every node of the cluster, one process."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = cluster_config(tmp_path)
        placement = PlacementRules.from_config(self.config)
        self.engines: dict[str, Engine] = {}
        self.coordinators: dict[str, Coordinator] = {}
        self.feeds: dict[str, ChangeFeed] = {}
        loop = asyncio.get_running_loop()
        for spec in self.config.nodes:
            engine = Engine(
                spec.data_dir, spec.id, EngineSettings(placement_of=placement.placement_of)
            )
            feed = ChangeFeed(loop)
            engine.add_listener(feed.on_change)
            router = Router(self.config, spec, placement, membership=None)
            self.engines[spec.id] = engine
            self.feeds[spec.id] = feed
            self.coordinators[spec.id] = Coordinator(
                engine,
                router,
                forwarder=DirectForwarder(router, self.coordinators),
                feed=feed,
            )

    def __getitem__(self, node_id: str) -> Coordinator:
        return self.coordinators[node_id]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[InProcessNodes]:
    cluster = InProcessNodes(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


CLIENT = Call(ANYONE)


# -- reads and writes of keys held here ---------------------------------------------


async def test_put_then_get_global_key_served_locally(nodes: InProcessNodes) -> None:
    ack = await nodes["iad-1"].put(b"g/1", b"v1", 0, CLIENT)
    assert ack.served_by == "iad-1"
    assert ack.version.origin == "iad-1"
    result = await nodes["iad-1"].get(b"g/1", CLIENT)
    assert result.served_by == "iad-1"
    assert result.found is not None
    assert result.found[:3] == (b"v1", ack.version.timestamp, "iad-1")


async def test_get_absent_key_not_found(nodes: InProcessNodes) -> None:
    result = await nodes["fra-1"].get(b"g/absent", CLIENT)
    assert result == GetResult(None, "fra-1")


async def test_delete_then_get_absent(nodes: InProcessNodes) -> None:
    await nodes["fra-1"].put(b"g/d", b"x", 0, CLIENT)
    ack = await nodes["fra-1"].delete(b"g/d", CLIENT)
    assert ack.served_by == "fra-1"
    assert (await nodes["fra-1"].get(b"g/d", CLIENT)).found is None


# -- forwarding of pinned keys ------------------------------------------------------


async def test_put_pinned_key_forwarded_and_never_stored_here(nodes: InProcessNodes) -> None:
    ack = await nodes["iad-1"].put(b"eu/alice", b"secret", 0, CLIENT)
    assert ack.served_by == "fra-1"
    assert nodes.engines["fra-1"].get(b"eu/alice") is not None
    assert nodes.engines["iad-1"].get(b"eu/alice") is None
    assert nodes.engines["iad-1"].get_record(b"eu/alice") is None
    result = await nodes["nrt-1"].get(b"eu/alice", CLIENT)
    assert result.served_by == "fra-1"
    assert result.found is not None and result.found[0] == b"secret"


async def test_forwarded_call_for_foreign_key_refused_not_bounced(nodes: InProcessNodes) -> None:
    forwarded = Call(ANYONE, forwarded_by="nrt-1")
    with pytest.raises(FailedPrecondition, match="already forwarded by nrt-1"):
        await nodes["iad-1"].get(b"eu/alice", forwarded)
    with pytest.raises(FailedPrecondition):
        await nodes["iad-1"].put(b"eu/alice", b"x", 0, forwarded)
    with pytest.raises(FailedPrecondition):
        await nodes["iad-1"].scan(forwarded, prefix=b"")


async def test_no_allowed_node_reachable_unavailable_names_tried(nodes: InProcessNodes) -> None:
    del nodes.coordinators["fra-1"]  # fra-1 is the only eu-west node
    with pytest.raises(Unavailable, match="fra-1"):
        await nodes["iad-1"].get(b"eu/alice", CLIENT)


async def test_get_many_mixed_placements_in_request_order(nodes: InProcessNodes) -> None:
    await nodes["fra-1"].put(b"eu/a", b"EA", 0, CLIENT)
    await nodes["nrt-1"].put(b"jp/a", b"JA", 0, CLIENT)
    await nodes["iad-1"].put(b"g/a", b"GA", 0, CLIENT)
    keys = [b"jp/a", b"g/a", b"eu/missing", b"eu/a", b"g/missing"]
    result = await nodes["iad-1"].get_many(keys, CLIENT)
    assert result.served_by == "iad-1"
    values = [None if f is None else f[0] for f in result.found]
    assert values == [b"JA", b"GA", None, b"EA", None]
    assert result.read_by == ["nrt-1", "iad-1", "fra-1", "fra-1", "iad-1"]


async def test_write_within_one_foreign_placement_forwarded_atomically(
    nodes: InProcessNodes,
) -> None:
    ack = await nodes["iad-1"].write([PutOp(b"eu/x", b"1"), PutOp(b"eu/y", b"2")], CLIENT)
    assert ack.served_by == "fra-1"
    x, y = nodes.engines["fra-1"].get_many([b"eu/x", b"eu/y"])
    assert x is not None and y is not None
    assert x[1:3] == y[1:3] == tuple(ack.version)  # one version for the whole batch


async def test_write_spanning_placements_held_apart_refused(nodes: InProcessNodes) -> None:
    with pytest.raises(InvalidArgument, match="split it into one Write per placement"):
        await nodes["iad-1"].write([PutOp(b"eu/x", b"1"), DeleteOp(b"jp/y")], CLIENT)
    assert nodes.engines["fra-1"].get(b"eu/x") is None


# -- scans --------------------------------------------------------------------------


async def test_scan_stitched_pages_cover_every_key_once(nodes: InProcessNodes) -> None:
    expected = []
    for node_id, prefix in (("fra-1", b"eu/"), ("nrt-1", b"jp/"), ("iad-1", b"g/")):
        for i in range(7):
            key = prefix + b"%02d" % i
            await nodes[node_id].put(key, b"v", 0, CLIENT)
            expected.append(key)
    seen: list[bytes] = []
    token = b""
    for _ in range(20):
        page = await nodes["iad-1"].scan(CLIENT, page_token=token, limit=4, keys_only=True)
        assert page.served_by == "iad-1"
        assert len(page.items) <= 4
        assert all(item.value == b"" for item in page.items)
        assert page.held_by is not None
        for item, holder in zip(page.items, page.held_by, strict=True):
            assert holder == {b"eu/": "fra-1", b"jp/": "nrt-1"}.get(item.key[:3], "iad-1")
        seen += [item.key for item in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(expected)


async def test_scan_of_a_prefix_with_a_nested_rule_is_served_by_each_owner(
    nodes: InProcessNodes,
) -> None:
    await nodes["fra-1"].put(b"eu/a", b"EU", 0, CLIENT)
    await nodes["iad-1"].put(b"eu/us/a", b"US", 0, CLIENT)
    await nodes["fra-1"].put(b"eu/z", b"EU", 0, CLIENT)
    for at in ("iad-1", "fra-1", "nrt-1"):
        page = await nodes[at].scan(CLIENT, prefix=b"eu/")
        assert [i.key for i in page.items] == [b"eu/a", b"eu/us/a", b"eu/z"], at
        assert page.held_by == ["fra-1", "iad-1", "fra-1"], at


async def test_scan_page_token_outside_range_refused(nodes: InProcessNodes) -> None:
    with pytest.raises(InvalidArgument, match="page_token does not belong"):
        await nodes["fra-1"].scan(CLIENT, prefix=b"g/", page_token=b"h")


async def test_scan_empty_range_refused(nodes: InProcessNodes) -> None:
    with pytest.raises(InvalidArgument, match="scan range is empty"):
        await nodes["fra-1"].scan(CLIENT, start=b"b", end=b"a")


# -- authorization ------------------------------------------------------------------


async def test_read_scope_token_cannot_write(nodes: InProcessNodes) -> None:
    reader = Call(Principal("ro", "read", ()))
    with pytest.raises(PermissionDenied, match="scope read; this call needs write"):
        await nodes["fra-1"].put(b"g/1", b"x", 0, reader)
    with pytest.raises(PermissionDenied):
        await nodes["fra-1"].write([DeleteOp(b"g/1")], reader)
    assert (await nodes["fra-1"].get(b"g/1", reader)).found is None


async def test_prefix_token_confined_to_its_prefix(nodes: InProcessNodes) -> None:
    tenant = Call(Principal("tenant-a", "write", (b"t/a/",)))
    await nodes["fra-1"].put(b"t/a/1", b"x", 0, tenant)
    with pytest.raises(PermissionDenied, match="may only use keys under 't/a/'"):
        await nodes["fra-1"].get(b"t/b/1", tenant)
    with pytest.raises(PermissionDenied):
        await nodes["fra-1"].get_many([b"t/a/1", b"t/b/1"], tenant)
    with pytest.raises(PermissionDenied, match="requested range"):
        await nodes["fra-1"].scan(tenant, prefix=b"t/")
    page = await nodes["fra-1"].scan(tenant, prefix=b"t/a/")
    assert [i.key for i in page.items] == [b"t/a/1"]


async def test_forwarded_call_is_checked_against_the_callers_principal(
    nodes: InProcessNodes,
) -> None:
    reader = Call(Principal("ro", "read", ()))
    with pytest.raises(PermissionDenied):
        await nodes["iad-1"].put(b"eu/alice", b"x", 0, reader)
    assert nodes.engines["fra-1"].get(b"eu/alice") is None


# -- watch --------------------------------------------------------------------------


async def _subscribed(feed: ChangeFeed, watchers: int = 1) -> None:
    """Wait (bounded) until ``feed`` has ``watchers`` live subscriptions."""
    for _ in range(1000):
        if feed.watchers >= watchers:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"feed has {feed.watchers} watchers, expected {watchers}")


async def _next_events(stream: AsyncIterator[ChangeEvent], n: int) -> list[ChangeEvent]:
    return [await asyncio.wait_for(anext(stream), timeout=5) for _ in range(n)]


async def test_watch_merges_local_and_relayed_changes(nodes: InProcessNodes) -> None:
    stream = nodes["iad-1"].watch(b"", CLIENT)
    first = asyncio.ensure_future(anext(stream))
    await _subscribed(nodes.feeds["iad-1"])
    await _subscribed(nodes.feeds["fra-1"])  # the relayed part of the watch
    await _subscribed(nodes.feeds["nrt-1"])
    await nodes["iad-1"].put(b"g/w", b"local", 0, CLIENT)
    await nodes["fra-1"].put(b"eu/w", b"relayed", 0, CLIENT)
    events = [await asyncio.wait_for(first, timeout=5), *await _next_events(stream, 1)]
    by_key = {e.key: e for e in events}
    assert by_key[b"g/w"].served_by == "iad-1" and by_key[b"g/w"].local
    assert by_key[b"eu/w"].served_by == "fra-1" and by_key[b"eu/w"].value == b"relayed"
    await stream.aclose()


async def test_watch_delete_event_is_a_tombstone(nodes: InProcessNodes) -> None:
    stream = nodes["fra-1"].watch(b"g/", CLIENT)
    first = asyncio.ensure_future(anext(stream))
    await _subscribed(nodes.feeds["fra-1"])
    await nodes["fra-1"].put(b"g/t", b"x", 0, CLIENT)
    await nodes["fra-1"].delete(b"g/t", CLIENT)
    put, delete = await asyncio.wait_for(first, timeout=5), *await _next_events(stream, 1)
    assert not put.deleted and delete.deleted and delete.value == b""
    await stream.aclose()


async def test_forwarded_watch_to_a_node_holding_nothing_of_it_refused(
    nodes: InProcessNodes,
) -> None:
    with pytest.raises(FailedPrecondition, match="already forwarded by nrt-1"):
        await anext(nodes["iad-1"].watch(b"eu/x", Call(ANYONE, forwarded_by="nrt-1")))


async def test_watch_over_a_nested_rule_relays_each_owner_once(nodes: InProcessNodes) -> None:
    stream = nodes["nrt-1"].watch(b"eu/", CLIENT)
    first = asyncio.ensure_future(anext(stream))
    await _subscribed(nodes.feeds["fra-1"])  # eu/ (without eu/us/)
    await _subscribed(nodes.feeds["iad-1"])  # eu/us/
    await nodes["fra-1"].put(b"eu/a", b"EU", 0, CLIENT)
    await nodes["iad-1"].put(b"eu/us/a", b"US", 0, CLIENT)
    events = [await asyncio.wait_for(first, timeout=5), *await _next_events(stream, 1)]
    assert sorted((e.key, e.served_by) for e in events) == [
        (b"eu/a", "fra-1"), (b"eu/us/a", "iad-1"),
    ]  # fmt: skip
    assert nodes.feeds["fra-1"].watchers == 1  # one relay per owner, not per range part
    await stream.aclose()
    assert nodes.feeds["fra-1"].watchers == nodes.feeds["iad-1"].watchers == 0


def test_in_process_nodes_fixture_has_every_node(tmp_path: Path) -> None:
    async def build() -> list[str]:
        cluster = InProcessNodes(tmp_path)
        try:
            return sorted(cluster.coordinators)
        finally:
            cluster.close()

    assert asyncio.run(build()) == sorted(n for n, _ in NODES)


def _stale_copy(engine: Engine, key: bytes, value: bytes) -> None:
    """A local copy of a key this node may not hold, as a rule change leaves behind.

    An old version (timestamp 2**20 ms), so any write by the owner is newer.
    """
    engine.apply(key, native.encode_record(False, 1 << 20, 0, b"old-node", value))


async def test_scan_stitched_never_serves_a_stale_local_copy(nodes: InProcessNodes) -> None:
    await nodes["fra-1"].put(b"eu/a", b"owner", 0, CLIENT)
    await nodes["iad-1"].put(b"g/a", b"global", 0, CLIENT)
    iad = nodes.engines["iad-1"]
    for key in (b"eu/a", b"eu/stale-only"):  # iad-1 kept these from before the rule
        _stale_copy(iad, key, b"stale")
    for limit in (1, 2, 100):
        seen: list[tuple[bytes, bytes]] = []
        token = b""
        for _ in range(10):
            page = await nodes["iad-1"].scan(CLIENT, page_token=token, limit=limit)
            seen += [(item.key, item.value) for item in page.items]
            token = page.next_page_token
            if not token:
                break
        assert seen == [(b"eu/a", b"owner"), (b"g/a", b"global")], limit


async def test_scan_local_parts_skip_every_refused_range(nodes: InProcessNodes) -> None:
    nrt = nodes.engines["nrt-1"]
    for key in (b"a", b"eu/x", b"f", b"jp/1", b"z"):
        nrt.put(key, b"v")  # eu/x is a stale copy: nrt-1 (ap-northeast) may not hold it
    page = await nodes["nrt-1"].scan(CLIENT, limit=100)
    assert [item.key for item in page.items] == [b"a", b"f", b"jp/1", b"z"]


async def test_get_many_never_reads_a_stale_local_copy(nodes: InProcessNodes) -> None:
    await nodes["fra-1"].put(b"eu/a", b"owner", 0, CLIENT)
    _stale_copy(nodes.engines["iad-1"], b"eu/a", b"stale")
    _stale_copy(nodes.engines["iad-1"], b"eu/b", b"stale")
    result = await nodes["iad-1"].get_many([b"eu/a", b"eu/b"], CLIENT)
    assert [None if f is None else f[0] for f in result.found] == [b"owner", None]


# -- clock fencing --------------------------------------------------------------------


async def test_write_refused_while_clock_fenced_and_forwarded_write_still_served(
    nodes: InProcessNodes,
) -> None:
    fence = nodes.engines["iad-1"].clock.fence
    fence.fenced, fence.ahead_ms, fence.peers = True, 2_345, 2
    with pytest.raises(
        FailedPrecondition, match=r"2345 ms ahead of its peers .*median of 2"
    ) as info:
        await nodes["iad-1"].put(b"g/k", b"v", 0, CLIENT)
    assert "the limit is 500 ms (replication.max_clock_skew_ms)" in str(info.value)
    assert nodes.engines["iad-1"].get(b"g/k") is None and fence.refused_count == 1
    # A key held elsewhere is written by its node, whose clock is in bounds.
    assert (await nodes["iad-1"].put(b"eu/k", b"v", 0, CLIENT)).served_by == "fra-1"
    # Reads go on; writes resume as soon as the fence lifts.
    assert (await nodes["iad-1"].get(b"g/k", CLIENT)).found is None
    fence.fenced = False
    assert (await nodes["iad-1"].put(b"g/k", b"v", 0, CLIENT)).served_by == "iad-1"


# -- bounds in bytes and counts ------------------------------------------------------

BIG = 600 * 1024  # 7 of these exceed one 4 MiB message


async def test_get_many_counts_max_batch_ops_over_all_keys_before_routing(
    nodes: InProcessNodes,
) -> None:
    keys = [b"eu/%04d" % i for i in range(600)] + [b"g/%04d" % i for i in range(600)]
    with pytest.raises(
        InvalidArgument, match=r"^batch get has 1200 keys; the limit is 1000 \(max_batch_ops\)$"
    ):
        await nodes["iad-1"].get_many(keys, CLIENT)


async def test_get_many_answer_over_the_message_limit_refused(nodes: InProcessNodes) -> None:
    for i in range(5):
        await nodes["fra-1"].put(b"eu/%d" % i, b"e" * BIG, 0, CLIENT)
        await nodes["iad-1"].put(b"g/%d" % i, b"g" * BIG, 0, CLIENT)
    local = [b"g/%d" % i for i in range(5)]
    assert len((await nodes["iad-1"].get_many(local, CLIENT)).found) == 5  # 3 MB: fits
    mixed = local + [b"eu/%d" % i for i in range(5)]
    with pytest.raises(ResourceExhausted, match=r"\(max_message_bytes, less framing\)"):
        await nodes["iad-1"].get_many(mixed, CLIENT)
    many_local = [b"g/%d" % (i % 5) for i in range(200)]  # read in runs, refused early
    with pytest.raises(ResourceExhausted, match="batch get answer is at least"):
        await nodes["iad-1"].get_many(many_local, CLIENT)


async def test_scan_pages_are_bounded_in_bytes_local_and_stitched(nodes: InProcessNodes) -> None:
    budget = nodes.engines["iad-1"].limits.response_bytes
    expected = []
    for node_id, prefix in (("fra-1", b"eu/"), ("iad-1", b"g/")):
        for i in range(12):
            key = prefix + b"%02d" % i
            await nodes[node_id].put(key, b"v" * BIG, 0, CLIENT)
            expected.append(key)
    for kwargs in ({"prefix": b"g/"}, {}):  # local only, then stitched with fra-1's part
        seen: list[bytes] = []
        token = b""
        for _ in range(50):
            page = await nodes["iad-1"].scan(CLIENT, page_token=token, limit=1000, **kwargs)
            assert page.items and sum(len(i.key) + len(i.value) for i in page.items) <= budget
            seen += [item.key for item in page.items]
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(k for k in expected if k.startswith(kwargs.get("prefix", b"")))
    keys_only = await nodes["iad-1"].scan(CLIENT, prefix=b"g/", limit=1000, keys_only=True)
    assert len(keys_only.items) == 12 and not keys_only.next_page_token


async def test_slow_watch_reads_the_feed_at_its_pace_until_trimmed_past(tmp_path: Path) -> None:
    """A slow watcher queues nothing on the node: it lags in the feed, then expires."""
    from edgekv.coordinator.resumable import FEED_PAGE
    from edgekv.errors import WatchTokenExpired
    from edgekv.limits import Limits

    engine = Engine(
        tmp_path / "db", "n1", EngineSettings(limits=Limits(max_watch_queue_bytes=1 << 20))
    )
    try:
        feed = ChangeFeed(asyncio.get_running_loop())
        engine.add_listener(feed.on_change)
        config = cluster_config(tmp_path)
        placement = PlacementRules.from_config(config)
        router = Router(config, config.node("iad-1"), placement, membership=None)
        coordinator = Coordinator(engine, router, feed=feed)
        stream = coordinator.watch(b"w/", CLIENT).__aiter__()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # subscribed
        engine.put(b"w/first", b"v")
        assert (await first).key == b"w/first"
        for i in range(100):  # 6.4 MB in 100 changes: far past max_watch_queue_bytes
            engine.put(b"w/%03d" % i, b"x" * 64 * 1024)
        assert [(await stream.__anext__()).key for _ in range(100)] == [
            b"w/%03d" % i for i in range(100)
        ]
        for i in range(3 * FEED_PAGE):
            engine.put(b"w/small/%04d" % i, b"s")
        await stream.__anext__()  # the watch is now a page into these
        engine.feed.trim(max_entries=10, max_bytes=1 << 30, max_age_ms=1 << 40)
        seen = 1
        with pytest.raises(WatchTokenExpired, match="watch fell behind"):
            while True:
                await stream.__anext__()
                seen += 1
        assert seen <= FEED_PAGE  # what it had read before the trim, not a change more
        await stream.aclose()
    finally:
        engine.close()
