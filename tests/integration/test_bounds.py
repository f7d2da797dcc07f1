"""Work bounded in bytes at real nodes: anti-entropy pages, scan pages, BatchGet, Watch."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"))
FAST = {
    "heartbeat_interval_s": 0.2,
    "antientropy_interval_s": 1.0,
    "log_trim_interval_s": 0.2,
    # These tests are about paging by bytes, not about the pace: a fixed one. The pace
    # that yields to a late loop (pacecontrol.py) took them 24 -> 34 s on a loaded
    # 2-CPU machine, where the nodes' loops run late whatever the repair does.
    "antientropy_min_bytes_per_s": 16 * 1024 * 1024,
}
BIG = 40 * 1024
N_BIG = 500
# Values of tens of KiB with messages sized for them (a peer accepts 4 x 128 KiB):
# 500 x 40 KiB is then far more than one message, as 20,000 such values are at
# the default 4 MiB, and 3 records fill a page.
SMALL_MESSAGES = {"max_value_bytes": 64 * 1024, "max_message_bytes": 128 * 1024}


def make_cluster(tmp_path: Path, **extra: Any) -> LocalCluster:
    replication = {**FAST, **extra.pop("replication", {})}
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, extra={"replication": replication, **extra}
    )
    return LocalCluster(path)


def versions(endpoint: str, prefix: bytes) -> dict[bytes, tuple[int, str]]:
    """key -> version of every live key under ``prefix`` (a keys-only scan: small pages)."""
    out: dict[bytes, tuple[int, str]] = {}
    with grpc.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        token = b""
        while True:
            page = stub.Scan(
                kv_pb2.ScanRequest(prefix=prefix, limit=5000, page_token=token, keys_only=True),
                timeout=10,
            )
            out.update((i.key, (i.version.timestamp, i.version.origin)) for i in page.items)
            token = page.next_page_token
            if not token:
                return out


def write_big(endpoint: str, prefix: bytes, n: int = N_BIG, size: int = BIG) -> None:
    """``n`` keys of ``size`` bytes (value i repeated), one Put each."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for i in range(n):
            key = b"%s%05d" % (prefix, i)
            stub.Put(kv_pb2.PutRequest(key=key, value=value(i, size)), timeout=30)


def value(i: int, size: int = BIG) -> bytes:
    return (b"%05d" % i) * (size // 5)


def assert_big_converged(cluster: LocalCluster, prefix: bytes, timeout_s: float) -> None:
    want = versions(cluster.endpoint("fra-1"), prefix)
    assert len(want) == N_BIG
    wait_until(
        lambda: versions(cluster.endpoint("iad-1"), prefix) == want,
        timeout_s=timeout_s,
        what=f"iad-1 to hold the {N_BIG} big records of fra-1",
    )
    with grpc.insecure_channel(cluster.endpoint("iad-1")) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for i in (0, N_BIG // 2, N_BIG - 1):
            got = stub.Get(kv_pb2.GetRequest(key=b"%s%05d" % (prefix, i)), timeout=5)
            assert got.found and got.value == value(i)


def test_peer_past_log_retention_repaired_with_values_of_tens_of_kib(tmp_path: Path) -> None:
    # 500 x 40 KiB = 20 MB: far more than a peer message may carry, so anti-entropy
    # must page by bytes; moving up to 1,000 records per call failed at the same
    # chunk forever (RESOURCE_EXHAUSTED).
    with make_cluster(
        tmp_path, replication={"log_retention_entries": 50}, limits=SMALL_MESSAGES
    ) as cluster:
        cluster.start()
        cluster.stop("iad-1")
        write_big(cluster.endpoint("fra-1"), b"big/")
        cluster.start(["iad-1"])
        assert_big_converged(cluster, b"big/", timeout_s=60)


def test_empty_replacement_node_converges_with_values_of_tens_of_kib(tmp_path: Path) -> None:
    # The first convergence is log shipping (batches bounded by the same budget),
    # the second anti-entropy onto the empty data directory.
    with make_cluster(
        tmp_path, replication={"log_retention_entries": 10}, limits=SMALL_MESSAGES
    ) as cluster:
        cluster.start()
        write_big(cluster.endpoint("fra-1"), b"rep/")
        assert_big_converged(cluster, b"rep/", timeout_s=60)
        cluster.stop("iad-1")
        shutil.rmtree(cluster.config.node("iad-1").data_dir)
        cluster.start(["iad-1"])
        assert_big_converged(cluster, b"rep/", timeout_s=60)


def test_batch_get_of_tens_of_thousands_of_pinned_keys_refused_while_reads_go_on(
    tmp_path: Path,
) -> None:
    # 30 placements pinned to us-east: 30,000 keys read at fra-1 are forwarded in
    # parts of 1,000, each within max_batch_ops, so only a count over all keys
    # before routing refuses the call (before: it was served, 30 forwards later).
    placement = [(f"p{i:02d}/", ["us-east"]) for i in range(30)]
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, placement=placement, extra={"replication": FAST}
    )
    keys = [b"p%02d/%04d" % (p, i) for p in range(30) for i in range(1000)]
    with LocalCluster(path) as cluster:
        cluster.start()
        fra = cluster.endpoint("fra-1")
        with grpc.insecure_channel(fra) as channel:
            kv_pb2_grpc.KVStub(channel).Put(kv_pb2.PutRequest(key=b"mine", value=b"v"), timeout=5)
        stop = threading.Event()
        latencies: list[float] = []

        def reader() -> None:  # another client, on its own channel
            with grpc.insecure_channel(fra) as channel:
                stub = kv_pb2_grpc.KVStub(channel)
                while not stop.is_set():
                    t0 = time.monotonic()
                    assert stub.Get(kv_pb2.GetRequest(key=b"mine"), timeout=5).found
                    latencies.append(time.monotonic() - t0)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            with grpc.insecure_channel(fra) as channel:
                stub = kv_pb2_grpc.KVStub(channel)
                for _ in range(10):
                    t0 = time.monotonic()
                    with pytest.raises(grpc.RpcError) as excinfo:
                        stub.BatchGet(kv_pb2.BatchGetRequest(keys=keys), timeout=30)
                    elapsed = time.monotonic() - t0
                    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert excinfo.value.details() == (
                        "batch get has 30000 keys; the limit is 1000 (max_batch_ops)"
                    )
                    assert elapsed < 2.0, f"refusing took {elapsed:.2f}s"
        finally:
            stop.set()
            thread.join(timeout=10)
        assert latencies and max(latencies) < 1.0, f"slowest read {max(latencies):.3f}s"


def test_scan_and_batch_get_over_big_values_stay_under_the_message_limit(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path)
    limit = 4 * 1024 * 1024  # the default max_message_bytes, and gRPC's default receive limit
    with LocalCluster(path) as cluster:
        cluster.start()
        with grpc.insecure_channel(cluster.endpoint("node-1")) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            for i in range(200):
                key = b"sv/%04d" % i
                stub.Put(kv_pb2.PutRequest(key=key, value=value(i, 100 * 1024)), timeout=10)
            seen: list[bytes] = []
            token = b""
            while True:
                page = stub.Scan(
                    kv_pb2.ScanRequest(prefix=b"sv/", limit=1000, page_token=token), timeout=10
                )
                assert page.ByteSize() <= limit
                assert page.items  # every page progresses
                seen += [item.key for item in page.items]
                token = page.next_page_token
                if not token:
                    break
            assert seen == [b"sv/%04d" % i for i in range(200)]
            # A BatchGet whose answer would not fit one message is refused, naming the limit.
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.BatchGet(kv_pb2.BatchGetRequest(keys=seen[:100]), timeout=10)
            assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "(max_message_bytes, less framing)" in (excinfo.value.details() or "")
            small = stub.BatchGet(kv_pb2.BatchGetRequest(keys=seen[:20]), timeout=10)
            assert [r.value for r in small.results] == [value(i, 100 * 1024) for i in range(20)]


class Watching:
    """A Watch read on its own thread; after ``pause_after`` events it stops reading."""

    def __init__(
        self, stub: kv_pb2_grpc.KVStub, prefix: bytes, pause_after: int | None = None
    ) -> None:
        self.call = stub.Watch(kv_pb2.WatchRequest(prefix=prefix), timeout=60)
        self.events: list[kv_pb2.WatchEvent] = []
        self.error: grpc.RpcError | None = None
        self.resume = threading.Event()
        self._pause_after = pause_after
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
                if len(self.events) == self._pause_after:
                    self.resume.wait(60)
        except grpc.RpcError as exc:
            self.error = exc

    def close(self) -> None:
        self.resume.set()
        self.call.cancel()
        self._thread.join(10)


def subscribed(stub: kv_pb2_grpc.KVStub, *watches: Watching, key: bytes) -> None:
    """Write ``key`` until every watch has seen an event (Watch subscribes asynchronously)."""
    wait_until(
        lambda: (
            stub.Put(kv_pb2.PutRequest(key=key, value=b"v"), timeout=5)
            and all(w.events for w in watches)
        ),
        timeout_s=10,
        what="the watches to subscribe",
    )


def test_watch_streams_are_limited_per_client(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path, extra={"limits": {"max_watches_per_client": 2}})
    with LocalCluster(path) as cluster:
        cluster.start()
        with grpc.insecure_channel(cluster.endpoint("node-1")) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            first, second = Watching(stub, b"w/"), Watching(stub, b"w/")
            subscribed(stub, first, second, key=b"w/1")
            third = Watching(stub, b"w/")
            wait_until(lambda: third.error, timeout_s=10, what="the third Watch refused")
            assert third.error is not None
            assert third.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (third.error.details() or "").endswith(
                "has 2 Watch streams open; the limit is 2 (max_watches_per_client)"
            )
            first.close()
            opened: list[Watching] = []

            def watch_again() -> bool:  # once the server has seen the first one close
                if not opened or opened[-1].error is not None:
                    opened.append(Watching(stub, b"w/"))
                stub.Put(kv_pb2.PutRequest(key=b"w/2", value=b"v"), timeout=5)
                return bool(opened[-1].events)

            try:
                wait_until(watch_again, timeout_s=10, what="a Watch once another one closed")
            finally:
                for watch in (second, third, *opened):
                    watch.close()


def test_slow_watch_queues_nothing_and_ends_out_of_range_once_trimmed_past(
    tmp_path: Path,
) -> None:
    """A Watch reads the node's change feed at its client's pace (a page of about 1 MiB
    at a time): nothing queues up on the node for a slow client; once the feed is
    trimmed past it, the Watch ends with OUT_OF_RANGE (rescan and resume)."""
    extra = {"watch": {"feed_max_entries": 20, "trim_interval_ms": 50}}
    path = write_cluster_file(tmp_path, extra=extra)
    with LocalCluster(path) as cluster:
        cluster.start()
        with grpc.insecure_channel(cluster.endpoint("node-1")) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            slow = Watching(stub, b"q/", pause_after=1)  # reads one event, then stops
            try:
                subscribed(stub, slow, key=b"q/first")
                for i in range(100):  # 6.4 MB, 5 times what the feed keeps
                    value = b"x" * 64 * 1024
                    stub.Put(kv_pb2.PutRequest(key=b"q/%03d" % i, value=value), timeout=5)
                time.sleep(0.5)  # the trimmer runs every 50 ms
                slow.resume.set()
                wait_until(lambda: slow.error, timeout_s=20, what="the slow Watch to end")
                assert slow.error is not None
                assert slow.error.code() == grpc.StatusCode.OUT_OF_RANGE
                assert "rescan" in (slow.error.details() or "")
                assert len(slow.events) < 100
            finally:
                slow.close()
