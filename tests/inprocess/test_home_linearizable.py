"""STRONG reads and CAS writes of homed keys stay linearizable under faults (issue 13).

Six clients on three PoPs read STRONG, compare-and-set, create and delete a few
keys homed at fra-1 while a nemesis partitions a PoP from the home, slows the
home down to a crawl (a pause as its peers see it), and stops and restarts a
non-home PoP and the home itself. The recorded history is checked per key by
tests/torture/linearizability.py: some order of the operations that respects
real time must be legal for a register with CAS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from edgekv.local.inprocess import ClusterFactory, InProcessCluster
from edgekv.v1 import kv_pb2_grpc
from tests.torture.cas_clients import Recorder, run_client
from tests.torture.linearizability import CAS, check

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
HOME = "fra-1"
KEYS = (b"ctr/a", b"ctr/b", b"ctr/c")


async def _nemesis(cluster: InProcessCluster, stop: Callable[[], bool]) -> list[str]:
    done: list[str] = []
    steps = [
        (
            "partition nrt-1 from the home",
            lambda: cluster.cut("nrt-1", HOME),
            lambda: cluster.heal(),
        ),
        (
            "slow the home (pause)",
            lambda: _delay_home(cluster, 400),
            lambda: _delay_home(cluster, 0),
        ),
        (
            "stop iad-1",
            lambda: cluster.stop_node("iad-1", grace_s=0),
            lambda: cluster.start(["iad-1"]),
        ),
        (
            "kill the home",
            lambda: cluster.stop_node(HOME, grace_s=0),
            lambda: cluster.start([HOME]),
        ),
    ]
    for name, start, end in steps:
        if stop():
            break
        await asyncio.sleep(0.5)
        result = start()
        if asyncio.iscoroutine(result):
            await result
        done.append(name)
        await asyncio.sleep(1.0)
        result = end()
        if asyncio.iscoroutine(result):
            await result
    return done


def _delay_home(cluster: InProcessCluster, one_way_ms: float) -> None:
    for node in cluster.node_ids:
        if node != HOME:
            cluster.set_delay(node, HOME, one_way_ms)


async def test_strong_reads_and_cas_linearizable_under_faults(make_cluster: ClusterFactory) -> None:
    placement = (("ctr/", [r for r, _, _ in REGIONS], HOME),)
    cluster = await make_cluster(regions=REGIONS, nodes=NODES, placement=placement)
    for i, a in enumerate(cluster.node_ids):
        for b in cluster.node_ids[i + 1 :]:
            cluster.set_delay(a, b, 2.0)
    rec = Recorder()
    channels = [grpc.aio.insecure_channel(cluster.endpoint(n)) for n in cluster.node_ids]
    try:
        nemesis = asyncio.create_task(_nemesis(cluster, lambda: False))

        async def one_client(i: int, node: str, channel: grpc.aio.Channel) -> None:
            client = cluster.client(node, timeout_s=3.0)
            await run_client(i, client, kv_pb2_grpc.KVStub(channel), KEYS, rec, nemesis.done)

        await asyncio.gather(
            *(
                one_client(2 * j + k, node, channels[j])
                for j, node in enumerate(cluster.node_ids)
                for k in range(2)
            )
        )
        faults = await nemesis
    finally:
        for channel in channels:
            await channel.close()
        cluster.heal()
    ops = rec.operations()
    answered = [op for op in ops if op.ret is not None]
    assert len(answered) > 200, f"too few operations were answered: {len(answered)}"
    assert sum(op.kind == CAS and op.ok for op in answered) > 20
    started = time.monotonic()
    results = check(ops)
    unknown = sum(op.ret is None for op in ops)
    print(
        f"{len(ops)} ops ({unknown} unanswered), faults: {faults}; checked in "
        f"{time.monotonic() - started:.1f} s, {sum(r.states_explored for r in results)} states"
    )
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(
        f"key {r.key!r} ({r.operations} ops) is not linearizable; faults: {faults}\n{r.explanation}"
        for r in failures
    )
