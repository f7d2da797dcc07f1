"""The Python SDK (sync and asyncio) against real node processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgekv
from edgekv import AsyncClient, Client, Delete, Put
from edgekv.client.retry import RetryPolicy
from edgekv.local.cluster import LocalCluster
from edgekv.local.faultproxy import ProxyHost
from edgekv.local.launcher import NodeProcess, free_port, write_cluster_file
from edgekv.local.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(node: NodeProcess) -> Iterator[Client]:
    with Client(node.endpoint) as c:
        yield c


def test_sync_client_every_call(client: Client) -> None:
    written = client.put("user/1", "alice")
    assert written.served_by == "node-1" and written.version.origin == "node-1"
    entry = client.get("user/1")
    assert entry is not None and entry.value == b"alice" and entry.version == written.version
    assert client.get(b"user/none") is None
    client.put(b"user/2", b"bob", ttl_ms=60_000)
    many = client.get_many([b"user/2", "user/none", "user/1"])
    assert [e.value if e else None for e in many] == [b"bob", None, b"alice"]
    assert many[0] is not None and many[0].expires_at_ms > 0
    batch = client.write([Put("user/3", "carol"), Delete("user/1")])
    assert client.get("user/3").version == batch.version  # type: ignore[union-attr]
    assert client.get("user/1") is None
    deleted = client.delete("user/3")
    assert deleted.version.timestamp > batch.version.timestamp
    status = client.status()
    assert status.node_id == "node-1" and status.read_path == "cython"
    members = client.members()
    assert [m.node_id for m in members] == ["node-1"] and members[0].is_self


def test_scan_iterator_follows_page_tokens(client: Client) -> None:
    client.write([Put(b"scan/%03d" % i, b"v%d" % i) for i in range(250)])
    keys = [e.key for e in client.scan(b"scan/", page_size=7)]
    assert keys == [b"scan/%03d" % i for i in range(250)]
    assert len(list(client.scan(b"scan/", limit=10))) == 10
    ranged = list(client.scan(start=b"scan/100", end=b"scan/105", keys_only=True))
    assert [(e.key, e.value) for e in ranged] == [(b"scan/%03d" % i, b"") for i in range(100, 105)]


def test_errors_are_edgekv_errors_with_the_limit(client: Client) -> None:
    with pytest.raises(edgekv.InvalidArgument, match=r"1048576 \(max_value_bytes\)") as excinfo:
        client.put("big", b"x" * (1024 * 1024 + 1))
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, edgekv.EdgeKVError)
    with pytest.raises(edgekv.InvalidArgument, match="key is empty"):
        client.get(b"")
    with pytest.raises(edgekv.InvalidArgument, match="appears twice"):
        client.write([Put("d", "1"), Delete("d")])
    with pytest.raises(edgekv.InvalidArgument, match="must be bytes or str"):
        client.put(42, "x")  # type: ignore[arg-type]


def test_timeout_raises_deadline_exceeded(client: Client) -> None:
    client.write([Put(b"t/%04d" % i, b"x" * 1000) for i in range(1000)])
    with pytest.raises(edgekv.EdgeKVError) as excinfo:
        list(client.scan(b"t/", page_size=1000, timeout_s=0.000001))
    assert type(excinfo.value).__name__ == "DeadlineExceeded"


def test_unavailable_after_retries_on_dead_endpoint() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, jitter=False)
    with Client(endpoint, discover=False, retry=policy, timeout_s=1) as c:
        started = time.monotonic()
        with pytest.raises(edgekv.Unavailable, match=endpoint):
            c.get("k")
        assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs between three tries
        with pytest.raises(edgekv.Unavailable):
            c.put("k", "v")
    with pytest.raises(edgekv.Unavailable):
        Client(endpoint, timeout_s=0.5)  # discovery needs one reachable seed


def test_async_client_every_call(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(node.endpoint) as c:
            written = await c.put("a/1", "x")
            entry = await c.get("a/1")
            assert entry is not None and entry.version == written.version
            assert await c.get("a/none") is None
            await c.write([Put(b"a/%02d" % i, b"v") for i in range(30)])
            assert [e.key async for e in c.scan("a/", page_size=4, limit=5)] == [
                b"a/00", b"a/01", b"a/02", b"a/03", b"a/04",
            ]  # fmt: skip
            assert len(await c.get_many(["a/00", "a/99"])) == 2
            await c.delete("a/1")
            assert await c.get("a/1") is None
            assert (await c.status()).node_id == "node-1"
            with pytest.raises(edgekv.InvalidArgument):
                await c.put("", "x")
            events = []

            async def watch() -> None:
                async for event in c.watch("w/"):
                    events.append(event)
                    return

            watcher = asyncio.create_task(watch())
            while not events:
                await c.put("w/1", "v")
                await asyncio.wait([watcher], timeout=0.1)
            assert events[0].key == b"w/1" and events[0].local

    asyncio.run(scenario())


def test_sync_watch_sees_changes(client: Client) -> None:
    events = []
    stream = client.watch("sw/")

    def consume() -> None:
        for event in stream:
            events.append(event)
            return

    t = threading.Thread(target=consume)
    t.start()
    wait_until(lambda: client.put("sw/k", "v") and events, timeout_s=10, what="a watch event")
    t.join(5)
    assert events[0].key == b"sw/k" and not events[0].deleted


REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
# A client near Virginia with a fast path to Frankfurt (one-way delays, on the wire).
# Direct to fra: ~20 ms round trip; through iad, which forwards over the emulated
# Atlantic (~45 ms each way), it would be over 90 ms.
CLIENT_DELAYS_MS = {"fra-1": 10.0, "iad-1": 1.0, "nrt-1": 75.0}


def test_client_routes_to_nearest_allowed_pop_and_fails_over(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, placement=(("eu/", ["eu-west"]),),
        extra={"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}},
    )  # fmt: skip
    host = ProxyHost()
    try:
        with LocalCluster(path, wan=True) as cluster:
            cluster.start()
            overrides = {}
            for node_id, delay in CLIENT_DELAYS_MS.items():
                proxy = host.add(cluster.endpoint(node_id), name=f"client=>{node_id}")
                host.set_delay(proxy, delay)
                overrides[node_id] = f"127.0.0.1:{proxy.port}"
            with Client(cluster.endpoint("iad-1"), endpoint_overrides=overrides) as c:
                assert [n.node_id for n in c.topology.nearest()] == ["iad-1", "fra-1", "nrt-1"]
                assert c.put("global/k", "v").served_by == "iad-1"
                # The pinned key goes straight to Frankfurt: one ocean crossing, not two hops.
                assert c.topology.route(b"eu/k")[0].node_id == "fra-1"
                started = time.perf_counter()
                assert c.put("eu/k", "v").served_by == "fra-1"
                direct_ms = (time.perf_counter() - started) * 1000
                assert direct_ms < 70, f"{direct_ms:.1f} ms: went through iad, not straight to fra"
                cluster.kill("iad-1")
                entry = wait_until(lambda: c.get("global/k"), timeout_s=20, what="failover read")
                assert entry.served_by == "fra-1"  # the next nearest
    finally:
        host.close()
