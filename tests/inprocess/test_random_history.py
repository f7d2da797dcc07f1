"""Hypothesis drives random writes, deletes, partitions, heals and restarts in-process.

The in-process twin of tests/integration/test_convergence_property.py: a fresh
three-node cluster per example (it starts in a fraction of a second), and after
the final heal every node must hold exactly the last-writer-wins outcome of the
versions the nodes acknowledged.
"""

from __future__ import annotations

import asyncio
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv import Version
from edgekv.local.inprocess import InProcessCluster

NODES = ("a-1", "b-1", "c-1")
KEYS = 6

op_strategy = st.one_of(
    st.tuples(
        st.just("put"), st.sampled_from(NODES), st.integers(0, KEYS - 1), st.binary(max_size=8)
    ),
    st.tuples(st.just("delete"), st.sampled_from(NODES), st.integers(0, KEYS - 1)),
    st.tuples(st.just("isolate"), st.sampled_from(NODES)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("restart"), st.sampled_from(NODES), st.booleans()),
)


async def run_history(directory: str, ops: list[tuple[object, ...]]) -> None:
    expected: dict[bytes, tuple[Version, bytes | None]] = {}

    def record(key: bytes, version: Version, value: bytes | None) -> None:
        best = expected.get(key)
        if best is None or (best[0].timestamp, best[0].origin) < (
            version.timestamp,
            version.origin,
        ):
            expected[key] = (version, value)

    async with InProcessCluster(
        directory,
        regions=(("r1", 0.0, 0.0), ("r2", 10.0, 10.0), ("r3", 20.0, 20.0)),
        nodes=tuple(zip(NODES, ("r1", "r2", "r3"), strict=True)),
    ) as cluster:
        clients = {n: cluster.client(n) for n in NODES}
        for op in ops:
            kind = op[0]
            if kind == "put":
                _, node, k, value = op
                key = b"h/%d" % k
                result = await clients[node].put(key, value)
                record(key, result.version, value)
            elif kind == "delete":
                _, node, k = op
                key = b"h/%d" % k
                result = await clients[node].delete(key)
                record(key, result.version, None)
            elif kind == "isolate":
                _, node = op
                cluster.partition([node], [n for n in NODES if n != node])
            elif kind == "heal":
                cluster.heal()
            elif kind == "restart":
                _, node, abrupt = op
                await cluster.restart(node, grace_s=0.0 if abrupt else 0.2)
        cluster.heal()
        data = await cluster.assert_converged(b"h/")
    want = {
        key: (value, version.timestamp, version.origin)
        for key, (version, value) in expected.items()
        if value is not None
    }
    assert data == want


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=25))
def test_random_history_converges_to_last_writer_wins(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgekv-history-") as directory:
        asyncio.run(run_history(directory, ops))
