"""Hypothesis drives random writes, deletes, partitions, heals and restarts on 3 real nodes.

After healing, every node must hold identical data, equal to the last-writer-wins
outcome computed from the versions the nodes acknowledged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import assert_converged
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_cluster_file(
        tmp_path_factory.mktemp("convergence"),
        regions=(("r1", 0.0, 0.0), ("r2", 10.0, 10.0), ("r3", 20.0, 20.0)),
        nodes=tuple(zip(NODES, ("r1", "r2", "r3"), strict=True)),
        extra={"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}},
    )
    with LocalCluster(path) as c:
        c.start()
        yield c


_example = itertools.count()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op_strategy, min_size=1, max_size=25))
def test_random_history_converges_to_last_writer_wins(
    cluster: LocalCluster, ops: list[tuple[object, ...]]
) -> None:
    prefix = b"p%d/" % next(_example)
    expected: dict[bytes, tuple[tuple[int, str], bytes | None]] = {}
    stubs = {n: kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint(n))) for n in NODES}

    def record(key: bytes, version: common_pb2.Version, value: bytes | None) -> None:
        v = (version.timestamp, version.origin)
        if key not in expected or expected[key][0] < v:
            expected[key] = (v, value)

    for op in ops:
        kind = op[0]
        if kind == "put":
            _, node, k, value = op
            key = prefix + b"%d" % k
            resp = stubs[node].Put(kv_pb2.PutRequest(key=key, value=value), timeout=10)
            record(key, resp.version, value)
        elif kind == "delete":
            _, node, k = op
            key = prefix + b"%d" % k
            resp = stubs[node].Delete(kv_pb2.DeleteRequest(key=key), timeout=10)
            record(key, resp.version, None)
        elif kind == "isolate":
            _, node = op
            cluster.partition([node], [n for n in NODES if n != node])
        elif kind == "heal":
            cluster.heal()
        elif kind == "restart":
            _, node, crash = op
            if crash:
                cluster.kill(node)
                cluster.start([node])
            else:
                cluster.restart(node)
            stubs[node] = kv_pb2_grpc.KVStub(grpc.insecure_channel(cluster.endpoint(node)))
    cluster.heal()
    data = assert_converged({n: cluster.endpoint(n) for n in NODES}, prefix, timeout_s=60)
    live = {k: (v, value) for k, (v, value) in expected.items() if value is not None}
    assert {k: (val, ts, origin) for k, (val, ts, origin) in data.items()} == {
        k: (value, v[0], v[1]) for k, (v, value) in live.items()
    }
