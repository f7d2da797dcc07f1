"""Quick torture of home mode on node processes: STRONG reads and CAS stay linearizable.

Three PoPs in three regions (real ``edgekv serve`` processes, fault proxies on
every link); "ctr/" is homed at a-1. Six clients, two per PoP, read STRONG and
compare-and-set three keys (tests/torture/cas_clients.py) while a fixed
schedule SIGSTOPs the home, kill -9s a non-home PoP, partitions the home from
the others, and kill -9s the home, healing each before the next. The recorded
history must be linearizable per key (tests/torture/linearizability.py), and
nothing but the home may ever have written a homed key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from edgekv.client import AsyncClient, Client, RetryPolicy
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.v1 import kv_pb2_grpc

from .cas_clients import Recorder, run_client
from .linearizability import CAS, check

pytestmark = pytest.mark.integration

REGIONS = (("r1", 50.11, 8.68), ("r2", 38.95, -77.45), ("r3", 35.68, 139.69))
NODES = (("a-1", "r1"), ("b-1", "r2"), ("c-1", "r3"))
HOME = "a-1"
KEYS = (b"ctr/a", b"ctr/b", b"ctr/c")
REPLICATION = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 0.5}


def _schedule(
    cluster: LocalCluster,
) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    def pause() -> None:
        os.kill(cluster.nodes[HOME].pid, signal.SIGSTOP)

    def resume() -> None:
        os.kill(cluster.nodes[HOME].pid, signal.SIGCONT)

    return [
        ("pause the home (SIGSTOP)", pause, resume),
        ("kill -9 b-1", lambda: cluster.kill("b-1"), lambda: cluster.restart("b-1")),
        (
            "partition the home from b-1 and c-1",
            lambda: cluster.partition([HOME], ["b-1", "c-1"]),
            cluster.heal,
        ),
        ("kill -9 the home", lambda: cluster.kill(HOME), lambda: cluster.restart(HOME)),
    ]


async def _nemesis(cluster: LocalCluster, done: list[str]) -> None:
    for name, start, end in _schedule(cluster):
        await asyncio.sleep(0.7)
        await asyncio.to_thread(start)
        done.append(name)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(end)
    await asyncio.sleep(1.0)  # clients run on the healed cluster for a moment


def test_quick_home_torture_linearizable(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=REGIONS,
        nodes=NODES,
        placement=(("ctr/", [r for r, _, _ in REGIONS], HOME),),
        extra={"replication": REPLICATION},
        cluster="home-torture",
    )
    rec = Recorder()
    faults: list[str] = []
    with LocalCluster(path, log_level="warning") as cluster:
        cluster.start()
        asyncio.run(_run(cluster, rec, faults))
        for node in cluster.node_ids:  # nothing but the home ever wrote a homed key
            with Client(cluster.endpoint(node), discover=False) as client:
                origins = {entry.version.origin for entry in client.scan(b"ctr/")}
            assert origins <= {HOME}, (node, origins)
    ops = rec.operations()
    answered = [op for op in ops if op.ret is not None]
    assert len(answered) > 150, f"too few operations were answered: {len(answered)}"
    assert sum(op.kind == CAS and op.ok for op in answered) > 20
    assert len(faults) == 4, faults
    started = time.monotonic()
    failures = [r for r in check(ops) if not r.ok]
    print(f"{len(ops)} ops, faults {faults}, checked in {time.monotonic() - started:.1f} s")
    assert not failures, "\n".join(
        f"key {r.key!r} ({r.operations} ops) is not linearizable under {faults}:\n{r.explanation}"
        for r in failures
    )


async def _run(cluster: LocalCluster, rec: Recorder, faults: list[str]) -> None:
    nodes = cluster.node_ids
    channels = [grpc.aio.insecure_channel(cluster.endpoint(n)) for n in nodes]
    clients = [
        AsyncClient(cluster.endpoint(n), discover=False, timeout_s=3.0,
                    retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.05))
        for n in nodes
    ]  # fmt: skip
    try:
        nemesis = asyncio.create_task(_nemesis(cluster, faults))
        runs: list[Awaitable[None]] = [
            run_client(
                2 * j + k, clients[j], kv_pb2_grpc.KVStub(channels[j]), KEYS, rec, nemesis.done,
                max_ops=2000,
            )
            for j in range(len(nodes))
            for k in range(2)
        ]  # fmt: skip
        await asyncio.gather(*runs)
        await nemesis
    finally:
        for channel in channels:
            await channel.close()
        for client in clients:
            await client.close()
