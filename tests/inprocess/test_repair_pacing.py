"""Anti-entropy moves at most replication.antientropy_bytes_per_s through a node, and finishes.

Two in-process nodes; one misses 4 MiB of 32 KiB values past its peer's log
retention, so only anti-entropy can repair it, while both run syncs (the
peer pushes, the node pulls) at once. The bytes that move through the
repaired node, sampled while it is repaired, never run ahead of the setting
by more than the pacer's burst and the slices in flight; unpaced, the same
repair on this machine takes a fraction of a second.
"""

from __future__ import annotations

import time

from edgekv import Put
from edgekv.local.inprocess import REGIONS, ClusterFactory, InProcessCluster
from edgekv.replication.pacer import SLICE_BYTES

RATE = 1024 * 1024  # the least the cluster file allows
VALUE = bytes(range(256)) * 128  # 32 KiB
KEYS = 128  # 4 MiB
# What the metric may run ahead of the rate: one burst (a slice), plus the
# reservations in flight at once at the repaired node (its own pull, a push
# from the peer, a fetch or listing the peer asks of it), each a slice plus
# one record.
SLACK = SLICE_BYTES + 3 * (SLICE_BYTES + len(VALUE) + 64)


async def _cluster_missing_values(make_cluster: ClusterFactory, rate: int) -> InProcessCluster:
    """fra-1 holds KEYS values of VALUE past its log's retention; iad-1 misses them, cut off."""
    cluster = await make_cluster(
        regions=REGIONS[:2],
        nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
        replication={"log_retention_entries": 10, "antientropy_bytes_per_s": rate},
    )
    cluster.partition(["fra-1"], ["iad-1"])
    fra = cluster.client("fra-1")
    for start in range(0, KEYS, 8):
        await fra.write([Put(b"big/%03d" % i, VALUE) for i in range(start, start + 8)])
    for i in range(20):  # push every big write out of the log's retention
        await fra.put(b"small/%02d" % i, b"s")
    engine_fra = cluster.engine("fra-1")
    await cluster.wait_until(
        lambda: engine_fra.first_log_seq() > KEYS // 8, what="fra-1's log trimmed past the values"
    )
    assert cluster.dump("iad-1", b"big/") == {}

    return cluster


async def test_repair_moves_at_most_antientropy_bytes_per_s_and_completes(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await _cluster_missing_values(make_cluster, RATE)
    engine_fra, engine_iad = cluster.engine("fra-1"), cluster.engine("iad-1")
    samples: list[tuple[float, float]] = []  # (monotonic s, anti-entropy bytes through iad-1)

    def repaired() -> bool:
        samples.append(
            (time.monotonic(), cluster.metric("iad-1", "edgekv_antientropy_bytes_total"))
        )
        return engine_iad.digests.segment_digests(b"") == engine_fra.digests.segment_digests(b"")

    cluster.heal()
    await cluster.wait_until(repaired, timeout_s=60.0, what="iad-1 repaired by anti-entropy")
    data = await cluster.assert_converged(b"big/")
    assert len(data) == KEYS and all(value == VALUE for value, _, _ in data.values())

    moved = samples[-1][1] - samples[0][1]
    assert moved >= KEYS * len(VALUE), "the values came by anti-entropy, through the pacer"
    # Over every window of the repair, bytes moved <= rate x time + slack.
    worst = max(
        (b2 - b1) - RATE * (t2 - t1)
        for i, (t1, b1) in enumerate(samples)
        for t2, b2 in samples[i + 1 :: 7]
    )
    assert worst <= SLACK, f"ran {worst:.0f} bytes ahead of {RATE} bytes/s (slack {SLACK})"
    took_s = samples[-1][0] - samples[0][0]
    assert took_s >= (moved - SLACK) / RATE, f"{moved:.0f} bytes in {took_s:.2f} s: not paced"
    # The waits fall on whichever node is the bottleneck at the moment.
    waited = [cluster.metric(n, "edgekv_antientropy_paced_seconds_total") for n in cluster.nodes]
    assert sum(waited) > 0


async def test_repair_moves_each_record_once_when_both_nodes_sync(
    make_cluster: ClusterFactory,
) -> None:
    """Both nodes start a sync with each other as the link heals (fra-1 pushes, iad-1 pulls):
    one gives way (replication/syncturns.py), so each missing value crosses once, not twice."""
    cluster = await _cluster_missing_values(make_cluster, 4 * RATE)
    engine_fra, engine_iad = cluster.engine("fra-1"), cluster.engine("iad-1")
    before = cluster.metric("iad-1", "edgekv_antientropy_bytes_total")
    cluster.heal()
    await cluster.wait_until(
        lambda: engine_iad.digests.segment_digests(b"") == engine_fra.digests.segment_digests(b""),
        timeout_s=60.0,
        what="iad-1 repaired by anti-entropy",
    )
    data = await cluster.assert_converged(b"big/")
    assert len(data) == KEYS and all(value == VALUE for value, _, _ in data.values())
    moved = cluster.metric("iad-1", "edgekv_antientropy_bytes_total") - before
    values = KEYS * (len(VALUE) + 64)
    # Listings and the odd record fetched just as it was pushed: well under a second copy.
    assert moved < 1.25 * values, f"{moved:.0f} bytes moved to repair {values} bytes of records"
