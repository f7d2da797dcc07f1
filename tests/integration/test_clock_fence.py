"""Clock skew on real nodes: a node ahead of its peers is fenced, skewed records are quarantined.

Nodes get a skewed wall clock through the test-only EDGEKV_TEST_CLOCK_OFFSET_MS
(storage/clock.py), read when the process starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from edgekv.local.launcher import NodeProcess, start_node, write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

FAST = {
    "heartbeat_interval_s": 0.2,
    "antientropy_interval_s": 0.5,
    "log_trim_interval_s": 0.2,
    "tombstone_grace_s": 5.0,
}
OFFSET = "EDGEKV_TEST_CLOCK_OFFSET_MS"


class Nodes:
    """Node processes started one by one (each with its own environment); all stopped at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs: dict[str, NodeProcess] = {}

    def start(self, node_id: str, offset_ms: int = 0) -> NodeProcess:
        env = {OFFSET: str(offset_ms)} if offset_ms else {OFFSET: ""}
        proc = self.procs[node_id] = start_node(self.path, node_id, env=env)
        return proc

    def start_together(self, *node_ids: str) -> None:
        """Start nodes side by side (good clocks): up in one node's start-up time."""
        with ThreadPoolExecutor(max_workers=len(node_ids)) as pool:
            for future in [pool.submit(self.start, n) for n in node_ids]:
                future.result()

    def stop(self, node_id: str) -> None:
        self.procs.pop(node_id).stop()

    def kv(self, node_id: str) -> kv_pb2_grpc.KVStub:
        return kv_pb2_grpc.KVStub(grpc.insecure_channel(self.procs[node_id].endpoint))

    def metric(self, node_id: str, name: str) -> float:
        return scrape_metrics(self.procs[node_id].info["metrics_port"])[name][0][1]

    def get(self, node_id: str, key: bytes) -> bytes | None:
        reply = self.kv(node_id).Get(kv_pb2.GetRequest(key=key), timeout=5)
        return reply.value if reply.found else None

    def close(self) -> None:
        def stop(proc: NodeProcess) -> None:
            with contextlib.suppress(Exception):
                proc.stop()

        with ThreadPoolExecutor(max_workers=max(1, len(self.procs))) as pool:
            list(pool.map(stop, self.procs.values()))


@pytest.fixture
def three(tmp_path: Path) -> Iterator[Nodes]:
    nodes = (("node-1", "local"), ("node-2", "local"), ("node-3", "local"))
    path = write_cluster_file(tmp_path, nodes=nodes, extra={"replication": FAST}, metrics=True)
    started = Nodes(path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Nodes]:
    nodes = (("node-1", "local"), ("node-2", "local"))
    path = write_cluster_file(tmp_path, nodes=nodes, extra={"replication": FAST}, metrics=True)
    started = Nodes(path)
    try:
        yield started
    finally:
        started.close()


def put_refused(nodes: Nodes, node_id: str, key: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        nodes.kv(node_id).Put(kv_pb2.PutRequest(key=key, value=b"v"), timeout=5)
    return info.value


def put_ok(nodes: Nodes, node_id: str, key: bytes) -> bool:
    nodes.kv(node_id).Put(kv_pb2.PutRequest(key=key, value=b"v-" + key), timeout=5)
    return True


def test_node_with_clock_ahead_refuses_writes_until_back_in_bounds(three: Nodes) -> None:
    three.start("node-1")
    three.start("node-2")
    three.start("node-3", offset_ms=5_000)
    wait_until(lambda: three.metric("node-3", "edgekv_clock_fenced") == 1, timeout_s=10,
               what="node-3 fenced by its peers' heartbeats")  # fmt: skip
    assert three.metric("node-3", "edgekv_clock_ahead_seconds") > 4.0
    error = put_refused(three, "node-3", b"k")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ahead of its peers" in error.details()
    assert "the limit is 500 ms (replication.max_clock_skew_ms)" in error.details()
    assert three.metric("node-3", "edgekv_clock_fenced_writes_total") == 1
    assert three.get("node-3", b"k") is None  # nothing was written
    # The others are in bounds: the median of their peers is not node-3.
    assert three.metric("node-1", "edgekv_clock_fenced") == 0
    assert put_ok(three, "node-1", b"from-1")

    three.stop("node-3")
    three.start("node-3")  # the clock fixed
    wait_until(lambda: put_ok(three, "node-3", b"k"), timeout_s=10,
               what="node-3 accepting writes again")  # fmt: skip
    assert three.metric("node-3", "edgekv_clock_fenced") == 0
    wait_until(lambda: three.get("node-1", b"k") == b"v-k", timeout_s=10, what="k at node-1")


# The skewed record must reach node-1 before node-1's clock catches up with it
# (SKEW_MS - 500 ms): a stop and two node starts side by side (one start-up
# time, ~1 s idle, a few s loaded) fit in that even on a loaded machine. The
# test waits about SKEW_MS for the release, so it is no longer than that.
SKEW_MS = 12_000


def test_skewed_record_is_quarantined_and_the_rest_of_its_batch_applies(two: Nodes) -> None:
    # node-2 writes while alone (nothing to compare with, so not fenced): k1 with
    # a good clock, then k2 with its clock SKEW_MS ahead. Its clock is then fixed.
    two.start("node-2")
    put_ok(two, "node-2", b"k1")
    two.stop("node-2")
    two.start("node-2", offset_ms=SKEW_MS)
    put_ok(two, "node-2", b"k2")
    two.stop("node-2")
    two.start_together("node-2", "node-1")

    # node-2 ships [k1, k2] in one batch: k1 is applied, k2 set aside, the stream acked.
    wait_until(lambda: two.get("node-1", b"k1") == b"v-k1", timeout_s=10,
               what="k1 applied on node-1 although its batch holds a skewed record")  # fmt: skip
    assert two.get("node-1", b"k2") is None
    assert two.metric("node-1", "edgekv_clock_quarantined_records") == 1

    # The persisted HLC keeps node-2 ahead after its clock was fixed: it is fenced.
    wait_until(lambda: two.metric("node-2", "edgekv_clock_fenced") == 1, timeout_s=10,
               what="node-2 fenced while its HLC runs ahead")  # fmt: skip
    error = put_refused(two, "node-2", b"k3")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hybrid clock" in error.details()

    # Once the clocks catch up, k2 is released on node-1 and node-2 writes again;
    # its replication stream still flows.
    wait_until(lambda: two.get("node-1", b"k2") == b"v-k2", timeout_s=SKEW_MS / 1000 + 10,
               what="k2 released from quarantine on node-1")  # fmt: skip
    assert two.metric("node-1", "edgekv_clock_quarantined_records") == 0
    wait_until(lambda: put_ok(two, "node-2", b"k3"), timeout_s=10, what="node-2 in bounds")
    wait_until(lambda: two.get("node-1", b"k3") == b"v-k3", timeout_s=10, what="k3 on node-1")
