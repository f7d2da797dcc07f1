"""The Python SDK pointed at nodes' HTTP doors (http:// URLs), for HTTP-only egress.

One two-region cluster for the module (fra-1 in eu-west holds "eu/" keys, iad-1
in us-east) with bearer tokens and http_listen on every node. The SDK is the one
of the gRPC path: the same routing, retries, failover and errors, over Connect.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from doorcluster import token_entry, write_door_cluster

import edgekv
from edgekv import Delete, Put, errors
from edgekv.client import AsyncClient, Client
from edgekv.client._http1 import Http1Pool
from edgekv.client._testing import FLAVORS, Flavor
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import free_port, running_node, write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.tls import create_ca, issue_cert

pytestmark = pytest.mark.integration

TOKEN = "sdk-http-token"
MAX_VALUE = 64 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_door_cluster(
        tmp_path_factory.mktemp("sdk-http"),
        tokens=[token_entry("app", TOKEN, "write")],
        extra={"limits": {"max_value_bytes": MAX_VALUE}},
    )
    with LocalCluster(path, proxies=False) as started:
        started.start()
        yield started


def url(cluster: LocalCluster, node_id: str) -> str:
    return f"http://{cluster.nodes[node_id].http_endpoint}"


@pytest.fixture(params=FLAVORS)
def sdk(request: pytest.FixtureRequest) -> Iterator[Flavor]:
    with Flavor(request.param) as flavor:
        yield flavor


@pytest.fixture
def client(sdk: Flavor, cluster: LocalCluster) -> Iterator[Client]:
    with sdk.client(url(cluster, "iad-1"), token=TOKEN) as c:
        yield c


def test_every_call_over_http(client: Client, sdk: Flavor) -> None:
    p = f"{sdk.name}/"
    nearest = client.topology.nearest()[0].node_id  # by measured RTT: either, on loopback
    written = client.put(p + "user/1", "alice")
    assert written.served_by == nearest
    entry = client.get(p + "user/1")
    assert entry is not None and entry.value == b"alice" and entry.version == written.version
    assert client.get(p + "user/none") is None
    client.put(p + "user/2", b"bob", ttl_ms=60_000)
    many = client.get_many([p + "user/2", p + "user/none", p + "user/1"])
    assert [e.value if e else None for e in many] == [b"bob", None, b"alice"]
    assert many[0] is not None and many[0].expires_at_ms > 0
    batch = client.write([Put(p + "user/3", "carol"), Delete(p + "user/1")])
    assert client.get(p + "user/3").version == batch.version  # type: ignore[union-attr]
    assert client.get(p + "user/1") is None
    assert client.delete(p + "user/3").version.timestamp > batch.version.timestamp
    client.write([Put(f"{p}scan/{i:03d}", b"v") for i in range(25)])
    keys = [e.key for e in client.scan(p + "scan/", page_size=7)]
    assert keys == [f"{p}scan/{i:03d}".encode() for i in range(25)]
    assert client.status().node_id == nearest
    assert {m.node_id for m in client.members()} == {"fra-1", "iad-1"}


def test_discovery_routes_a_pinned_key_to_its_region_over_http(
    client: Client, cluster: LocalCluster
) -> None:
    # Discovery read the HTTP doors from Cluster.Members (Member.http_endpoint).
    assert {n.endpoint for n in client.topology.nodes} == {
        url(cluster, "fra-1"),
        url(cluster, "iad-1"),
    }
    assert client.topology.route(b"eu/k")[0].node_id == "fra-1"
    assert client.put("eu/k", "v").served_by == "fra-1"
    entry = client.get("eu/k")
    assert entry is not None and entry.served_by == "fra-1"


def test_errors_are_the_same_edgekv_errors(
    client: Client, sdk: Flavor, cluster: LocalCluster
) -> None:
    with pytest.raises(edgekv.InvalidArgument, match=rf"{MAX_VALUE} \(max_value_bytes\)"):
        client.put("big", b"x" * (MAX_VALUE + 1))
    with pytest.raises(edgekv.InvalidArgument, match="key is empty"):
        client.get(b"")
    bad = sdk.client(url(cluster, "iad-1"), token="wrong", discover=False)
    with pytest.raises(errors.Unauthenticated):
        bad.get("k")
    anonymous = sdk.client(url(cluster, "iad-1"), discover=False)
    with pytest.raises(errors.Unauthenticated):
        anonymous.put("k", "v")


def test_a_dead_door_fails_over_to_the_next_seed(sdk: Flavor, cluster: LocalCluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = edgekv.RetryPolicy(max_attempts=2, initial_backoff_s=0.01)
    with sdk.client([dead, url(cluster, "fra-1")], token=TOKEN, discover=False, retry=policy) as c:
        assert c.put("failover/k", "v").served_by == "fra-1"
    alone = sdk.client(dead, token=TOKEN, discover=False, retry=policy, timeout_s=1)
    with pytest.raises(edgekv.Unavailable, match=dead):
        alone.get("k")


def test_mixing_grpc_and_http_seeds_is_refused(cluster: LocalCluster) -> None:
    with pytest.raises(edgekv.InvalidArgument, match="not a mix"):
        Client([cluster.endpoint("fra-1"), url(cluster, "fra-1")], discover=False)


def test_sync_watch_over_http_sees_changes_and_stops(cluster: LocalCluster) -> None:
    events: list[edgekv.WatchEvent] = []
    with Client(url(cluster, "iad-1"), token=TOKEN) as client:
        stream = client.watch("sync/w/")

        def consume() -> None:
            for event in stream:
                events.append(event)
                return

        watcher = threading.Thread(target=consume)
        watcher.start()
        wait_until(lambda: client.put("sync/w/k", "v") and events, timeout_s=10,
                   what="a watch event over HTTP")  # fmt: skip
        watcher.join(5)
        assert not watcher.is_alive()
    assert events[0].key == b"sync/w/k" and not events[0].deleted


def test_async_watch_over_http_sees_changes_and_stops(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(url(cluster, "iad-1"), token=TOKEN) as client:
            events: list[edgekv.WatchEvent] = []

            async def watch() -> None:
                async for event in client.watch("async/w/"):
                    events.append(event)
                    return

            watcher = asyncio.create_task(watch())
            for _ in range(100):
                await client.put("async/w/k", "v")
                await asyncio.wait([watcher], timeout=0.1)
                if events:
                    break
            assert events and events[0].key == b"async/w/k"
            await asyncio.wait_for(watcher, 5)

    asyncio.run(scenario())


def test_session_token_and_receipts_over_http(sdk: Flavor, cluster: LocalCluster) -> None:
    p = f"{sdk.name}/sess/"
    with (
        sdk.client(url(cluster, "fra-1"), token=TOKEN, discover=False) as writer,
        sdk.client(url(cluster, "iad-1"), token=TOKEN, discover=False) as reader,
    ):
        written = writer.put(p + "1", b"v", await_replicas=1)
        assert [r.node_id for r in written.receipts] == ["iad-1"]
        assert written.session_token and writer.session_token
        reader.observe_token(writer.session_token)
        entry = reader.get(p + "1", consistency="session")
        assert entry is not None and entry.version == written.version
        assert reader.session_token == writer.session_token
        keys = [e.key for e in reader.scan(p, consistency="session")]
        assert keys == [(p + "1").encode()]


def test_async_unary_calls_keep_one_http1_connection_alive(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(url(cluster, "iad-1"), token=TOKEN, discover=False) as client:
            for i in range(20):
                await client.put(f"alive/{i}", b"v")
                assert await client.get(f"alive/{i}") is not None
            pools = client._connect_doors()._pools
            assert list(pools) == [url(cluster, "iad-1")]
            pool = pools[url(cluster, "iad-1")]
            assert isinstance(pool, Http1Pool) and len(pool._open) == 1

    asyncio.run(scenario())


def test_sync_unary_calls_from_threads_keep_http1_connections_alive(cluster: LocalCluster) -> None:
    door = url(cluster, "iad-1")
    with Client(door, token=TOKEN, discover=False) as client:

        def calls(thread: int) -> None:
            for i in range(10):
                client.put(f"sync/alive/{thread}/{i}", b"v")
                assert client.get(f"sync/alive/{thread}/{i}") is not None

        with ThreadPoolExecutor(4) as threads:
            list(threads.map(calls, range(4)))  # raises what a thread raised
        doors = client._connect_doors()
        assert list(doors._pools) == [door]
        assert 1 <= len(doors._pools[door]._idle) <= 4  # one per thread at most, kept
        assert doors._http is None  # no pyqwest client: Watch would make it


@pytest.fixture(scope="module")
def tls_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A node with TLS on its HTTP door: (its https:// URL, the directory of its CA)."""
    tmp_path = tmp_path_factory.mktemp("sdk-https")
    pki = tmp_path / "pki"
    create_ca(pki)
    issue_cert(pki, "node-1", ["127.0.0.1"])
    tls = {
        "ca_file": str(pki / "ca.pem"),
        "cert_file": str(pki / "{node}.pem"),
        "key_file": str(pki / "{node}-key.pem"),
    }
    path = write_cluster_file(
        tmp_path, extra={"security": {"tls": tls, "auth": {"mode": "disabled"}}}, http=True
    )
    with running_node(path, "node-1") as node:
        yield f"https://{node.http_endpoint}", pki


def test_every_call_over_https_with_the_clusters_ca(
    sdk: Flavor, tls_door: tuple[str, Path], tmp_path: Path
) -> None:
    door, pki = tls_door
    with sdk.client(door, tls_ca_file=str(pki / "ca.pem")) as client:
        assert client.put(f"{sdk.name}/tls/k", "v").served_by == "node-1"
        entry = client.get(f"{sdk.name}/tls/k")
        assert entry is not None and entry.value == b"v"
        assert client.status().node_id == "node-1"
    other = tmp_path / "other-ca"
    create_ca(other)
    strange = sdk.client(door, tls_ca_file=str(other / "ca.pem"), discover=False, timeout_s=2)
    with strange, pytest.raises(edgekv.Unavailable, match="not signed by the given CA"):
        strange.put("tls/k", "v")
    plain = door.replace("https://", "http://")
    with (
        sdk.client(plain, discover=False, timeout_s=2) as c,
        pytest.raises(edgekv.Unavailable, match=plain),
    ):
        c.get("tls/k")
