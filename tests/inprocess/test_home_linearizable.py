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
import random
import time
from collections.abc import Callable
from typing import Any

import grpc

from edgekv.client import AsyncClient, ConditionFailed, Version
from edgekv.errors import FailedPrecondition, InvalidArgument
from edgekv.local.inprocess import ClusterFactory, InProcessCluster
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc
from tests.torture.linearizability import (
    ABSENT,
    CAS,
    READ,
    UNKNOWN_CURRENT,
    WRITE,
    Operation,
    check,
)

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
HOME = "fra-1"
KEYS = (b"ctr/a", b"ctr/b", b"ctr/c")
MAX_OPS_PER_CLIENT = 400


class _Recorder:
    """Operations as they happened; versions are turned into values once the run is over."""

    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.value_of: dict[tuple[int, str], object] = {}

    def seen(self, version: tuple[int, str], value: object) -> None:
        self.value_of[version] = value

    def operations(self) -> list[Operation]:
        ops = []
        for r in self.raw:
            current = r.pop("current_version", None)
            if r["kind"] == CAS and not r["ok"]:
                r["current"] = (
                    ABSENT if current is None else self.value_of.get(current, UNKNOWN_CURRENT)
                )
            ops.append(Operation(**r))
        return ops


async def _client(
    n: int,
    client: AsyncClient,
    strong: kv_pb2_grpc.KVStub,
    rec: _Recorder,
    stop: Callable[[], bool],
) -> None:
    rng = random.Random(n)
    last: dict[bytes, tuple[object, Version | None]] = {}
    for i in range(MAX_OPS_PER_CLIENT):
        if stop():
            return
        key = rng.choice(KEYS)
        value = b"%d-%d" % (n, i)  # unique per write
        choice = rng.random()
        call = time.monotonic()
        entry: dict[str, Any] = {"key": key, "call": call, "client": n}
        try:
            if choice < 0.4:
                got = await strong.Get(
                    kv_pb2.GetRequest(key=key, consistency=common_pb2.CONSISTENCY_STRONG),
                    timeout=3,
                )
                read = got.value if got.found else ABSENT
                version = Version(got.version.timestamp, got.version.origin) if got.found else None
                if version is not None:
                    rec.seen(version, read)
                last[key] = (read, version)
                entry.update(kind=READ, value=read)
            elif choice < 0.85:
                expected, version = last.get(key, (ABSENT, None))
                entry.update(kind=CAS, value=value, expected=expected)
                if version is None:
                    ack = await client.put(key, value, if_absent=True, timeout_s=3)
                else:
                    ack = await client.put(key, value, if_version=version, timeout_s=3)
                rec.seen(ack.version, value)
                last[key] = (value, ack.version)
            elif choice < 0.95:
                entry.update(kind=WRITE, value=value)
                ack = await client.put(key, value, timeout_s=3)
                rec.seen(ack.version, value)
            else:
                entry.update(kind=WRITE, value=ABSENT)
                await client.delete(key, timeout_s=3)
            entry.update(ret=time.monotonic(), ok=True)
        except ConditionFailed as exc:
            entry.update(ret=time.monotonic(), ok=False, current_version=exc.current_version)
            last.pop(key, None)
        except (FailedPrecondition, InvalidArgument):
            continue  # refused before anything happened (a fenced clock, a misroute)
        except grpc.aio.AioRpcError:
            continue  # a read with no answer observed nothing
        except Exception:
            if entry.get("kind") == READ:
                continue
            entry.update(ret=None, ok=True)  # no answer: it may or may not have happened
        rec.raw.append(entry)
        await asyncio.sleep(rng.random() * 0.01)


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
    rec = _Recorder()
    channels = [grpc.aio.insecure_channel(cluster.endpoint(n)) for n in cluster.node_ids]
    try:
        nemesis = asyncio.create_task(_nemesis(cluster, lambda: False))

        async def run_client(i: int, node: str, channel: grpc.aio.Channel) -> None:
            client = cluster.client(node, timeout_s=3.0)
            await _client(i, client, kv_pb2_grpc.KVStub(channel), rec, nemesis.done)

        await asyncio.gather(
            *(
                run_client(2 * j + k, node, channels[j])
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
    results = check(ops)
    unknown = sum(op.ret is None for op in ops)
    print(f"{len(ops)} ops ({unknown} unanswered), faults: {faults}")
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(
        f"key {r.key!r} ({r.operations} ops) is not linearizable; faults: {faults}\n{r.explanation}"
        for r in failures
    )
