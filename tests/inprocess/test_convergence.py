"""Convergence, partitions, repair, residency and restarts on in-process clusters.

The same code paths as tests/integration (replication senders, anti-entropy,
routing, the peer service, gRPC on loopback, faults on the wire), without
node processes, so each test takes a second or two. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from edgekv import Delete, Put, Version
from edgekv.local.inprocess import ClusterFactory, InProcessCluster

NODES = ("fra-1", "iad-1", "nrt-1")
Winners = dict[bytes, tuple[Version, bytes | None]]


def record_winner(winners: Winners, key: bytes, version: Version, value: bytes | None) -> None:
    """Keep the write with the greater (timestamp, origin): the one LWW must keep."""
    best = winners.get(key)
    if best is None or (best[0].timestamp, best[0].origin) < (version.timestamp, version.origin):
        winners[key] = (version, value)


def live(winners: Winners) -> dict[bytes, tuple[bytes, int, str]]:
    """The dump every node must end with: the winning puts; deleted keys are absent."""
    return {
        key: (value, version.timestamp, version.origin)
        for key, (version, value) in winners.items()
        if value is not None
    }


async def test_concurrent_writes_on_every_node_converge_to_last_writer_wins(
    cluster: InProcessCluster,
) -> None:
    clients = {n: cluster.client(n) for n in NODES}
    winners: Winners = {}

    async def writer(node: str) -> None:
        client = clients[node]
        for i in range(40):
            key = b"lww/%02d" % (i % 10)
            if node == "nrt-1" and i % 4 == 0:
                result = await client.delete(key)
                record_winner(winners, key, result.version, None)
            else:
                value = f"{node}-{i}".encode()
                result = await client.put(key, value)
                record_winner(winners, key, result.version, value)

    await asyncio.gather(*(writer(n) for n in NODES))
    data = await cluster.assert_converged(b"lww/")
    assert data == live(winners)


async def test_partition_then_heal_converges_by_log_catch_up(
    make_cluster: ClusterFactory,
) -> None:
    # Anti-entropy only runs once at start: after the heal only the senders'
    # catch-up from the log can bring the two sides together.
    cluster = await make_cluster(replication={"antientropy_interval_s": 3600.0})
    cluster.partition(["fra-1"], ["iad-1", "nrt-1"])
    fra, iad = cluster.client("fra-1"), cluster.client("iad-1")
    winners: Winners = {}
    for i in range(20):
        key = b"part/%02d" % i
        a = await fra.put(key, b"eu-%d" % i)
        b = await iad.put(key, b"us-%d" % i)
        record_winner(winners, key, a.version, b"eu-%d" % i)
        record_winner(winners, key, b.version, b"us-%d" % i)
    only_fra = await fra.put(b"part/only-fra", b"1")
    record_winner(winners, b"part/only-fra", only_fra.version, b"1")

    # Each side keeps serving with its own values; the majority side converges alone.
    await cluster.assert_converged(b"part/", ["iad-1", "nrt-1"])
    got = await fra.get(b"part/00")
    assert got is not None and got.value == b"eu-0"
    assert b"part/only-fra" not in cluster.dump("iad-1", b"part/")
    assert cluster.dump("nrt-1", b"part/")[b"part/00"][0] == b"us-0"

    cluster.heal()
    assert await cluster.assert_converged(b"part/") == live(winners)


async def test_peer_cut_past_log_retention_is_repaired_by_antientropy(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(replication={"log_retention_entries": 20})
    cluster.partition(["fra-1", "iad-1"], ["nrt-1"])
    fra, iad = cluster.client("fra-1"), cluster.client("iad-1")
    for start in range(0, 300, 50):
        await fra.write([Put(b"ae/fra/%03d" % i, b"x" * 20) for i in range(start, start + 50)])
    for i in range(60):
        await iad.put(b"ae/iad/%03d" % i, b"y")
    await iad.delete(b"ae/fra/007")
    # Both logs are trimmed far beyond what nrt-1 received: its senders cannot
    # catch it up, only anti-entropy can.
    for node, written in (("fra-1", 300), ("iad-1", 61)):
        engine = cluster.engine(node)
        await cluster.wait_until(
            lambda engine=engine, written=written: engine.first_log_seq() > written - 30,
            what=f"{node}'s log trimmed below its retention",
        )  # fmt: skip
    assert cluster.dump("nrt-1", b"ae/") == {}

    cluster.heal()
    data = await cluster.assert_converged(b"ae/")
    assert len(data) == 300 - 1 + 60 and b"ae/fra/007" not in data

    def repaired() -> float:
        pulled = cluster.metric("nrt-1", "edgekv_antientropy_repaired_records_total")
        pushed = sum(
            cluster.metric(n, "edgekv_antientropy_repaired_records_total", peer="nrt-1")
            for n in ("fra-1", "iad-1")
        )
        return pulled + pushed

    # The records came through anti-entropy (whose counters move when a sync
    # finishes, a moment after its last record landed; a sync that gave way to the
    # peer's runs again ACTIVE_S later, and a busy loop slows the pace: time for both).
    await cluster.wait_until(
        lambda: repaired() >= 300, timeout_s=30.0, what="anti-entropy repair counts"
    )


async def test_a_sync_that_failed_at_start_is_retried_within_seconds(
    make_cluster: ClusterFactory,
) -> None:
    # A 10-minute interval: only the retry after a failure can sync within the test.
    cluster = await make_cluster(replication={"antientropy_interval_s": 600})
    cluster.cut("fra-1", "nrt-1")
    await cluster.restart("fra-1")  # its start-up sync with nrt-1 fails

    def count(sample: str) -> float:
        return cluster.metric("fra-1", f"edgekv_antientropy_{sample}_total", peer="nrt-1")

    await cluster.wait_until(lambda: count("failed_syncs") >= 1, what="the failed sync")
    assert count("syncs") == 0
    cluster.restore("fra-1", "nrt-1")
    await cluster.wait_until(lambda: count("syncs") >= 1, timeout_s=20, what="the retried sync")
    assert cluster.metric("fra-1", "edgekv_antientropy_syncs_total", peer="iad-1") >= 1


FOUR_NODES = (("fra-1", "eu-west"), ("fra-2", "eu-west"), ("iad-1", "us-east"),
              ("nrt-1", "ap-northeast"))  # fmt: skip
PLACEMENT = (("eu/", ["eu-west"]), ("eu/shared/", ["eu-west", "us-east", "ap-northeast"]))
PINNED = (b"eu/user/1", b"eu/ttl", b"eu/gone", b"eu/batch/1", b"eu/batch/2", b"eu/local")


async def test_pinned_keys_never_reach_nodes_outside_their_region(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(nodes=FOUR_NODES, placement=PLACEMENT)
    secret = os.urandom(16).hex().encode()
    iad, nrt = cluster.client("iad-1"), cluster.client("nrt-1")
    put = await iad.put(b"eu/user/1", secret)
    assert put.served_by in ("fra-1", "fra-2")  # forwarded, through the fault proxies
    await nrt.put(b"eu/ttl", secret, ttl_ms=60_000)
    await iad.put(b"eu/gone", secret)
    await nrt.delete(b"eu/gone")
    await iad.write([Put(b"eu/batch/1", secret), Delete(b"eu/batch/2")])
    await cluster.client("fra-2").put(b"eu/local", secret)
    await iad.put(b"eu/shared/x", b"everywhere")
    for client in (iad, nrt):
        got = await client.get(b"eu/user/1")
        assert got is not None and got.value == secret and got.served_by in ("fra-1", "fra-2")

    eu = await cluster.assert_converged(b"eu/", ["fra-1", "fra-2"])
    assert set(eu) == {b"eu/user/1", b"eu/ttl", b"eu/batch/1", b"eu/local", b"eu/shared/x"}
    # A fence written after every pinned write, at both EU origins: once it has
    # reached a node, every earlier log entry was offered to that node's link.
    for origin in ("fra-1", "fra-2"):
        await cluster.client(origin).put(f"fence/{origin}".encode(), b"1")
    await cluster.assert_converged(b"fence/", timeout_s=10)
    await cluster.assert_converged(b"eu/shared/")
    for node in ("iad-1", "nrt-1"):
        assert set(cluster.dump(node, b"eu/")) == {b"eu/shared/x"}
        for needle in (*PINNED, secret):
            assert cluster.traces(node, needle) == [], needle
    assert cluster.traces("fra-1", secret) and cluster.traces("fra-2", secret)


@pytest.mark.parametrize("grace_s", [1.0, 0.0], ids=["graceful", "abrupt"])
async def test_stopped_node_restarted_in_process_catches_up(
    cluster: InProcessCluster, grace_s: float
) -> None:
    nrt = cluster.client("nrt-1")
    await nrt.put(b"rs/mine", b"before")
    await cluster.assert_converged(b"rs/")
    seq_before = cluster.engine("nrt-1").last_seq

    await cluster.stop_node("nrt-1", grace_s=grace_s)
    fra, iad = cluster.client("fra-1"), cluster.client("iad-1")
    for i in range(50):
        await fra.put(b"rs/fra/%02d" % i, b"v")
        await iad.put(b"rs/iad/%02d" % i, b"v")
    await fra.delete(b"rs/mine")
    await cluster.start(["nrt-1"])

    data = await cluster.assert_converged(b"rs/")
    assert len(data) == 100 and b"rs/mine" not in data
    # The restarted node reopened its own data: its log continues, no seq reused.
    assert cluster.engine("nrt-1").last_seq == seq_before
    await cluster.client("nrt-1").put(b"rs/after", b"1")
    assert cluster.engine("nrt-1").last_seq == seq_before + 1
    await cluster.assert_converged(b"rs/")
