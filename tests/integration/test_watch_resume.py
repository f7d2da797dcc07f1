"""Resumable Watch on real node processes: disconnects, kill -9, failover, expiry, bounds (#13).

"Without gaps or duplicates" is checked the strongest way: every key is written
once, so every written version is its key's final state and must be delivered
exactly once, in order per key, whatever broke the stream in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv import AsyncClient, Client, WatchEvent, WatchTokenExpired
from edgekv.client.retry import RetryPolicy
from edgekv.local.cluster import LocalCluster
from edgekv.local.faultproxy import ProxyHost
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until_async
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
FAST = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0, "log_trim_interval_s": 0.2}
WATCH = {"progress_interval_ms": 200, "failover_wait_ms": 3000}
RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.3)


def make_cluster(tmp_path: Path, watch: dict[str, Any] | None = None, **kw: Any) -> LocalCluster:
    path = write_cluster_file(
        tmp_path,
        regions=REGIONS,
        nodes=NODES,
        extra={"replication": FAST, "watch": {**WATCH, **(watch or {})}},
        **kw,
    )
    return LocalCluster(path)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with make_cluster(tmp_path) as c:
        c.start()
        yield c


class Watcher:
    """Collects a watch's events on a task of the test's loop."""

    def __init__(self, client: AsyncClient, prefix: str, **kw: Any) -> None:
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        # With progress events: the first one says the watch holds its start token.
        self._task = asyncio.create_task(self._run(client, prefix, {"progress": True, **kw}))

    async def _run(self, client: AsyncClient, prefix: str, kw: dict[str, Any]) -> None:
        try:
            async for event in client.watch(prefix, **kw):
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Writer:
    """Writes distinct keys through its own client on a thread until stopped."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        self.written: dict[bytes, tuple[int, str]] = {}
        self._client = Client(endpoint, discover=False, retry=RETRY, timeout_s=5)
        self._prefix = prefix
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self._prefix}{i:05d}".encode()
            with contextlib.suppress(Exception):  # its node may be down: try the next key
                result = self._client.put(key, b"v%d" % i)
                self.written[key] = (result.version.timestamp, result.version.origin)
            i += 1

    def stop(self) -> dict[bytes, tuple[int, str]]:
        self._stop.set()
        self._thread.join(30)
        self._client.close()
        return self.written


def check_exactly_once(events: list[WatchEvent], written: dict[bytes, tuple[int, str]]) -> None:
    changes = [(e.key, (e.version.timestamp, e.version.origin)) for e in events if not e.progress]
    assert len(changes) == len(set(changes)), "a change was delivered twice"
    delivered = dict(changes)
    missing = sorted(k for k, v in written.items() if delivered.get(k) != v)
    assert not missing, f"{len(missing)} writes never delivered, e.g. {missing[:5]}"
    assert all(e.resume_token for e in events)


async def until_delivered(watcher: Watcher, written: dict[bytes, Any], timeout_s: float) -> None:
    await wait_until_async(
        lambda: watcher.error is not None or written.keys() <= {e.key for e in watcher.events},
        timeout_s=timeout_s,
        what="every write delivered",
    )
    assert watcher.error is None, watcher.error


async def test_watch_resumes_after_disconnects_without_gaps_or_duplicates(
    cluster: LocalCluster,
) -> None:
    host = ProxyHost()
    proxy = host.add(cluster.endpoint("fra-1"), name="client->fra-1")
    try:
        async with AsyncClient(f"127.0.0.1:{proxy.port}", discover=False, retry=RETRY) as client:
            watcher = Watcher(client, "d/")
            await wait_until_async(lambda: watcher.events, timeout_s=10, what="the first token")
            local = Writer(cluster.endpoint("fra-1"), "d/fra/")
            remote = Writer(cluster.endpoint("iad-1"), "d/iad/")  # replicated to fra-1
            for _ in range(3):  # break the stream mid-flight, three times
                await asyncio.sleep(0.7)
                host.cut(proxy)
                await asyncio.sleep(0.3)
                host.restore(proxy)
            await asyncio.sleep(0.5)
            written = {**local.stop(), **remote.stop()}
            await until_delivered(watcher, written, timeout_s=30)
            await watcher.stop()
        assert proxy.connections_accepted >= 4  # the watch really reconnected
        assert len(written) > 50
        check_exactly_once(watcher.events, written)
        assert {e.served_by for e in watcher.events} == {"fra-1"}
    finally:
        host.close()


@pytest.mark.parametrize("graceful", [False, True], ids=["kill-9", "sigterm"])
async def test_watch_resumes_after_its_pop_restarts(cluster: LocalCluster, graceful: bool) -> None:
    async with AsyncClient(cluster.endpoint("fra-1"), discover=False, retry=RETRY) as client:
        watcher = Watcher(client, "r/", resume_for_s=60)
        await wait_until_async(lambda: watcher.events, timeout_s=10, what="the first token")
        local = Writer(cluster.endpoint("fra-1"), "r/fra/")
        remote = Writer(cluster.endpoint("nrt-1"), "r/nrt/")
        await asyncio.sleep(1.0)
        if graceful:
            cluster.stop("fra-1")
        else:
            cluster.kill("fra-1")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.start, ["fra-1"])
        await asyncio.sleep(1.0)
        written = {**local.stop(), **remote.stop()}
        await until_delivered(watcher, written, timeout_s=60)
        await watcher.stop()
    check_exactly_once(watcher.events, written)
    assert {e.served_by for e in watcher.events} == {"fra-1"}  # resumed on its own feed


async def test_watch_fails_over_to_another_pop_without_gaps_or_duplicates(
    cluster: LocalCluster,
) -> None:
    endpoints = [cluster.endpoint(n) for n in ("fra-1", "iad-1")]
    async with AsyncClient(endpoints, discover=False, retry=RETRY) as client:
        watcher = Watcher(client, "f/")
        await wait_until_async(lambda: watcher.events, timeout_s=10, what="the first token")
        writer = Writer(cluster.endpoint("nrt-1"), "f/")  # replicated to both
        await asyncio.sleep(1.0)
        cluster.kill("fra-1")  # for good: the watch must move to iad-1
        await asyncio.sleep(1.0)
        written = writer.stop()
        await until_delivered(watcher, written, timeout_s=60)
        await watcher.stop()
    check_exactly_once(watcher.events, written)
    assert {e.served_by for e in watcher.events} == {"fra-1", "iad-1"}


async def test_too_old_token_is_out_of_range_then_rescan_and_resume(tmp_path: Path) -> None:
    with make_cluster(tmp_path, watch={"feed_max_entries": 20, "trim_interval_ms": 50}) as c:
        c.start(["fra-1"])
        async with AsyncClient(c.endpoint("fra-1"), discover=False, retry=RETRY) as client:
            old = await client.watch_token("o/")
            for i in range(100):
                await client.put(f"o/{i:03d}", "v")
            raw = kv_pb2_grpc.KVStub(grpc.insecure_channel(c.endpoint("fra-1")))

            def old_token_refused() -> bool:
                call = raw.Watch(kv_pb2.WatchRequest(prefix=b"o/", resume_token=old), timeout=10)
                try:
                    next(iter(call))
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.OUT_OF_RANGE, exc
                    return True
                finally:
                    call.cancel()
                return False  # replayed: the 100 writes fit between two trims (50 ms)

            await wait_until_async(old_token_refused, what="the feed trimmed past the old token")
            with pytest.raises(WatchTokenExpired, match="rescan"):
                async for _ in client.watch("o/", resume_token=old):
                    pass
            # The rescue: a token, a scan, then the watch from that token misses nothing.
            token = await client.watch_token("o/")
            copy = {e.key: e.value async for e in client.scan("o/")}
            assert len(copy) == 100
            after = {f"o/{i:03d}".encode(): (await client.put(f"o/{i:03d}", "new")).version
                     for i in range(5)}  # fmt: skip
            seen: list[WatchEvent] = []
            async with asyncio.timeout(30):
                async for event in client.watch("o/", resume_token=token):
                    seen.append(event)
                    if len(seen) == len(after):
                        break
            assert {e.key: e.version for e in seen} == after


def test_bad_tokens_are_invalid_argument_naming_the_limit(cluster: LocalCluster) -> None:
    raw = kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint("fra-1")))
    for token, words in ((b"\x01" * 5000, "the limit is 4096"), (b"\x01junk", "malformed")):
        with pytest.raises(grpc.RpcError) as info:
            next(iter(raw.Watch(kv_pb2.WatchRequest(prefix=b"b/", resume_token=token))))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (info.value.details() or "")
    scan = raw.Scan(kv_pb2.ScanRequest(prefix=b"b/"))
    assert scan.watch_token  # and the node is fine


async def test_watch_over_the_http_door_resumes_after_a_kill(tmp_path: Path) -> None:
    with make_cluster(tmp_path, http=True) as c:
        c.start()
        url = f"http://{c.nodes['fra-1'].http_endpoint}"
        async with AsyncClient(url, discover=False, retry=RETRY) as client:
            watcher = Watcher(client, "h/", resume_for_s=60)
            await wait_until_async(lambda: watcher.events, timeout_s=10, what="the first token")
            writer = Writer(c.endpoint("iad-1"), "h/")
            await asyncio.sleep(1.0)
            c.kill("fra-1")
            await asyncio.sleep(0.5)
            await asyncio.to_thread(c.start, ["fra-1"])
            await asyncio.sleep(1.0)
            written = writer.stop()
            await until_delivered(watcher, written, timeout_s=60)
            await watcher.stop()
        check_exactly_once(watcher.events, written)


async def test_pinned_prefix_watch_resumes_through_a_pop_that_may_not_hold_it(
    tmp_path: Path,
) -> None:
    """nrt-1 may not hold eu/: it relays the Watch from fra-1 with fra-1's tokens, resumes
    it from them after a disconnect, and never stores, logs or feeds an eu/ key itself."""
    with make_cluster(tmp_path, placement=[("eu/", ["eu-west"])]) as c:
        c.start()
        host = ProxyHost()
        proxy = host.add(c.endpoint("nrt-1"), name="client->nrt-1")
        try:
            async with AsyncClient(
                f"127.0.0.1:{proxy.port}", discover=False, retry=RETRY
            ) as client:
                watcher = Watcher(client, "eu/w/")
                await wait_until_async(lambda: watcher.events, timeout_s=10, what="a token")
                writer = Writer(c.endpoint("fra-1"), "eu/w/")
                await asyncio.sleep(0.7)
                host.cut(proxy)
                await asyncio.sleep(0.3)
                host.restore(proxy)
                await asyncio.sleep(0.5)
                written = writer.stop()
                await until_delivered(watcher, written, timeout_s=30)
                await watcher.stop()
            assert proxy.connections_accepted >= 2
            check_exactly_once(watcher.events, written)
            assert {e.served_by for e in watcher.events} == {"fra-1"}
        finally:
            host.close()
        cluster_stub = cluster_pb2_grpc.ClusterStub(grpc.insecure_channel(c.endpoint("nrt-1")))
        report = cluster_stub.Audit(cluster_pb2.AuditRequest(), timeout=30)
        assert report.violations == 0
        assert "feed" in report.checked_by_column_family  # the feed is audited too
