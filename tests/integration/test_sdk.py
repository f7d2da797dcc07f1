"""The Python SDK against real node processes.

Every test body that takes ``sdk`` (or ``client``) runs twice: on ``Client`` and on
``AsyncClient`` behind a blocking facade (edgekv.client._testing). Only the tests of
concurrency (threads, coroutines, watch consumers) are written for one client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgekv
from edgekv import AsyncClient, Client, Delete, Put
from edgekv.client._testing import VARIANTS, Flavor
from edgekv.client.retry import RetryPolicy
from edgekv.local.cluster import LocalCluster
from edgekv.local.faultproxy import ProxyHost
from edgekv.local.launcher import NodeProcess, free_port, write_cluster_file
from edgekv.local.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=VARIANTS)
def sdk(request: pytest.FixtureRequest) -> Iterator[Flavor]:
    """The sync client, then the async one (behind a blocking facade), for each test."""
    with Flavor(request.param) as flavor:
        yield flavor


@pytest.fixture
def client(sdk: Flavor, node: NodeProcess) -> Iterator[Client]:
    """A discovering client of the fresh node, of each flavor."""
    with sdk.client(node.endpoint) as c:
        yield c


@pytest.fixture
def sync_client(node: NodeProcess) -> Iterator[Client]:
    with Client(node.endpoint) as c:
        yield c


def test_every_call(client: Client) -> None:
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


def test_unavailable_after_retries_on_dead_endpoint(sdk: Flavor) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, jitter=False)
    with sdk.client(endpoint, discover=False, retry=policy, timeout_s=1) as c:
        started = time.monotonic()
        with pytest.raises(edgekv.Unavailable, match=endpoint):
            c.get("k")
        assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs between three tries
        with pytest.raises(edgekv.Unavailable):
            c.put("k", "v")
    # Discovery needs one reachable seed (Client: in the constructor; AsyncClient: on enter).
    with pytest.raises(edgekv.Unavailable), sdk.client(endpoint, timeout_s=0.5):
        pass


def test_get_many_keeps_order_with_duplicates_and_missing_keys(client: Client) -> None:
    client.write([Put(b"gm/%d" % i, b"v%d" % i) for i in range(5)])
    keys = [b"gm/3", b"gm/none", b"gm/0", b"gm/3", "gm/4"]
    got = client.get_many(keys)
    assert [e.key if e else None for e in got] == [b"gm/3", None, b"gm/0", b"gm/3", b"gm/4"]
    assert all(e.served_by == "node-1" for e in got if e)
    assert client.get_many([]) == []


def test_put_ttl_expires_everywhere_at_once(client: Client) -> None:
    written = client.put("ttl/k", "v", ttl_ms=300)
    entry = client.get("ttl/k")
    assert entry is not None and entry.version == written.version
    assert (
        entry.expires_at_ms > 0 and entry.expires_at_ms - written.version.timestamp // 65536 <= 400
    )
    wait_until(lambda: client.get("ttl/k") is None, timeout_s=5, what="ttl/k to expire")
    assert list(client.scan("ttl/")) == []


def test_scan_pages_keys_only_and_limits_over_many_pages(client: Client) -> None:
    for first in range(0, 2300, 1000):
        client.write(
            [Put(b"many/%04d" % i, b"v%d" % i) for i in range(first, min(first + 1000, 2300))]
        )
    keys = [e.key for e in client.scan("many/", page_size=97, keys_only=True)]
    assert keys == [b"many/%04d" % i for i in range(2300)]
    limited = list(client.scan(b"many/", page_size=100, limit=250))
    assert [e.value for e in limited] == [b"v%d" % i for i in range(250)]
    tail = [e.key for e in client.scan(b"many/", start=b"many/2297", page_size=1)]
    assert tail == [b"many/2297", b"many/2298", b"many/2299"]
    with pytest.raises(edgekv.InvalidArgument, match="scan range is empty"):
        client.scan(b"many/", start=b"many/0010", end=b"many/0010").__next__()


def test_every_error_is_an_edgekv_error_with_the_nodes_message(client: Client) -> None:
    with pytest.raises(edgekv.InvalidArgument, match="key is 1025 bytes; the limit is 1024"):
        client.put(b"k" * 1025, b"v")
    with pytest.raises(edgekv.InvalidArgument, match="key is empty"):
        client.put("", "v")
    with pytest.raises(edgekv.InvalidArgument, match=r"1000 \(max_batch_ops\)"):
        client.get_many([b"k%d" % i for i in range(1001)])
    with pytest.raises(edgekv.InvalidArgument, match="max_scan_limit"):
        list(client.scan("x/", page_size=10_001))
    with pytest.raises(edgekv.InvalidArgument, match="batch is empty"):
        client.write([])
    with pytest.raises(edgekv.InvalidArgument):
        client.delete(b"")
    # Nothing was written by the rejected calls.
    assert client.get(b"k" * 10) is None


@pytest.fixture
def slow_endpoint(node: NodeProcess) -> Iterator[str]:
    """The node behind a proxy that delays every byte by 150 ms each way."""
    host = ProxyHost()
    try:
        proxy = host.add(node.endpoint, name="client=>node-1 (slow)")
        host.set_delay(proxy, 150.0)
        yield f"127.0.0.1:{proxy.port}"
    finally:
        host.close()


def test_deadline_exceeded_on_every_kind_of_call(sdk: Flavor, slow_endpoint: str) -> None:
    with sdk.client(slow_endpoint, discover=False, timeout_s=5) as c:
        assert c.put("dl/k", "v").served_by == "node-1"  # slow but within the default
        calls = {
            "get": lambda: c.get("dl/k", timeout_s=0.1),
            "get_many": lambda: c.get_many(["dl/k"], timeout_s=0.1),
            "scan": lambda: list(c.scan("dl/", timeout_s=0.1)),
            "put": lambda: c.put("dl/k", "v", timeout_s=0.1),
            "delete": lambda: c.delete("dl/k", timeout_s=0.1),
            "status": lambda: c.status(timeout_s=0.1),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(edgekv.EdgeKVError) as excinfo:
                call()
            assert type(excinfo.value).__name__ == "DeadlineExceeded", (name, excinfo.value)
            assert time.monotonic() - started < 1.0, name  # not retried, not waited out
            assert slow_endpoint in str(excinfo.value)
        # The client is still fine, and the delete that timed out was applied anyway:
        # the reason a write whose answer was lost is never retried.
        assert wait_until(lambda: c.get("dl/k", timeout_s=5) is None, what="the late delete")


def test_client_default_timeout_bounds_each_call(sdk: Flavor, slow_endpoint: str) -> None:
    with sdk.client(slow_endpoint, discover=False, timeout_s=0.1) as c:
        with pytest.raises(edgekv.EdgeKVError) as excinfo:
            c.get("dl/k")
        assert type(excinfo.value).__name__ == "DeadlineExceeded"
        assert c.get("dl/k", timeout_s=5) is None


def test_retries_then_unavailable_once_the_node_is_stopped(
    sdk: Flavor, node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    sdk.patch_sleep(monkeypatch, sleeps.append, wait=True)
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.02, jitter=False)
    with sdk.client(node.endpoint, retry=policy, timeout_s=2) as c:
        c.put("r/k", "v")
        assert node.stop() == 0
        for read in (lambda: c.get("r/k"), lambda: c.get_many(["r/k"]), lambda: list(c.scan("r/")),
                     c.status):  # fmt: skip
            sleeps.clear()
            with pytest.raises(edgekv.Unavailable, match=node.endpoint):
                read()
            # 4 attempts, 3 waits. Streamed, the first may meet the stream the node ended
            # on its way out: not sent there, it goes again at once (client/_stream.py).
            assert sleeps in (pytest.approx([0.02, 0.04, 0.08]), [0.0, 0.04, 0.08])
        for write in (lambda: c.put("r/k", "w"), lambda: c.delete("r/k"),
                      lambda: c.write([Put("r/k", "w")])):  # fmt: skip
            sleeps.clear()
            with pytest.raises(edgekv.Unavailable):
                write()
            assert sleeps in ([], [0.0])  # a write goes again only if it was never sent


def test_pages_batches_and_errors(sdk: Flavor, node: NodeProcess) -> None:
    with sdk.client(node.endpoint) as c:
        c.write([Put(b"ap/%04d" % i, b"v") for i in range(777)])
        keys = [e.key for e in c.scan(b"ap/", page_size=50, keys_only=True)]
        assert keys == [b"ap/%04d" % i for i in range(777)]
        many = c.get_many([b"ap/0001", b"ap/none", b"ap/0000"])
        assert [e.key if e else None for e in many] == [b"ap/0001", None, b"ap/0000"]
        with pytest.raises(edgekv.InvalidArgument, match="max_value_bytes") as excinfo:
            c.put("big", b"x" * (1024 * 1024 + 1))
        assert isinstance(excinfo.value, ValueError)
        result = c.write([Put("ap/x", "1"), Delete("ap/0000")])
        assert c.get("ap/x").version == result.version  # type: ignore[union-attr]
        assert c.get("ap/0000") is None
        members = c.members()
        assert [m.node_id for m in members] == ["node-1"]
    assert c.closed


def test_many_coroutines_share_one_async_client(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(node.endpoint) as c:
            await asyncio.gather(*(c.put(b"co/%03d" % i, b"%d" % i) for i in range(200)))
            got = await asyncio.gather(*(c.get(b"co/%03d" % i) for i in range(200)))
            assert [e.value for e in got if e] == [b"%d" % i for i in range(200)]

    asyncio.run(scenario())


def test_many_threads_share_one_client(sync_client: Client) -> None:
    client = sync_client
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                key = b"th/%d/%d" % (t, i)
                client.put(key, key)
                assert client.get(key).value == key  # type: ignore[union-attr]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(list(client.scan("th/"))) == 400


def test_write_scan_limit_delete_and_status(client: Client) -> None:
    written = client.put("a/1", "x")
    entry = client.get("a/1")
    assert entry is not None and entry.version == written.version
    assert client.get("a/none") is None
    client.write([Put(b"a/%02d" % i, b"v") for i in range(30)])
    assert [e.key for e in client.scan("a/", page_size=4, limit=5)] == [
        b"a/00", b"a/01", b"a/02", b"a/03", b"a/04",
    ]  # fmt: skip
    assert len(client.get_many(["a/00", "a/99"])) == 2
    client.delete("a/1")
    assert client.get("a/1") is None
    assert client.status().node_id == "node-1"
    with pytest.raises(edgekv.InvalidArgument):
        client.put("", "x")


def test_async_watch_sees_changes(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(node.endpoint) as c:
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


def test_sync_watch_sees_changes(sync_client: Client) -> None:
    client = sync_client
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


def put_ms(client: Client, key: str) -> float:
    started = time.perf_counter()
    assert client.put(key, "v").served_by == "fra-1"
    return (time.perf_counter() - started) * 1000


def test_client_routes_to_nearest_allowed_pop_and_fails_over(sdk: Flavor, tmp_path: Path) -> None:
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
            with sdk.client(cluster.endpoint("iad-1"), endpoint_overrides=overrides) as c:
                assert [n.node_id for n in c.topology.nearest()] == ["iad-1", "fra-1", "nrt-1"]
                assert c.put("global/k", "v").served_by == "iad-1"
                # The pinned key goes straight to Frankfurt: one ocean crossing, not two hops.
                assert c.topology.route(b"eu/k")[0].node_id == "fra-1"
                assert c.put("eu/k", "v").served_by == "fra-1"
                # Straight is faster than through iad, measured side by side (the best
                # of three each, so a loaded machine's stalls do not decide it).
                with sdk.client(overrides["iad-1"], discover=False) as via_iad:
                    direct_ms = min(put_ms(c, "eu/k") for _ in range(3))
                    forwarded_ms = min(put_ms(via_iad, "eu/k") for _ in range(3))
                assert direct_ms < forwarded_ms, (
                    f"{direct_ms:.1f} ms, through iad {forwarded_ms:.1f} ms: not straight to fra"
                )
                # Only a write that reached Frankfurt can be read there once iad-1 is gone
                # (on a loaded machine the kill could beat replication over the WAN link).
                with Client(cluster.endpoint("fra-1"), discover=False) as fra:
                    wait_until(lambda: fra.get("global/k"), timeout_s=20, what="global/k at fra-1")
                cluster.kill("iad-1")
                entry = wait_until(lambda: c.get("global/k"), timeout_s=20, what="failover read")
                assert entry.served_by == "fra-1"  # the next nearest
    finally:
        host.close()
