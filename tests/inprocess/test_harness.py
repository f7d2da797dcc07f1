"""The in-process cluster harness itself: isolation between nodes, faults, clean stop."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from edgekv.local import inprocess
from edgekv.local.inprocess import ClusterFactory, InProcessCluster, port_is_free
from edgekv.storage.engine import Engine


async def test_close_releases_every_port_task_and_data_dir(tmp_path: Path) -> None:
    cluster = InProcessCluster(tmp_path)
    async with cluster:
        await cluster.client("fra-1").put(b"k", b"v")
        await cluster.assert_converged(b"k")
        cluster.partition(["fra-1"], ["iad-1", "nrt-1"])  # leave cut links behind too
        await cluster.client("iad-1").put(b"k", b"w")
        ports = cluster.ports()
        assert len(ports) == 3 * 2 + 6 * 2  # client and peer port per node, 2 proxies per link
    assert cluster.nodes == {}
    assert cluster.running_tasks() == []
    assert [p for p in ports if not port_is_free(p)] == []
    for node in cluster.config.nodes:  # RocksDB closed: another owner may open it now
        Engine(node.data_dir, node.id).close()


async def test_close_after_a_failing_test_body_still_stops_everything(tmp_path: Path) -> None:
    cluster = InProcessCluster(tmp_path)
    with pytest.raises(RuntimeError, match="the test failed"):
        async with cluster:
            await cluster.client("iad-1").put(b"k", b"v")
            raise RuntimeError("the test failed")
    assert cluster.nodes == {} and cluster.running_tasks() == []
    assert all(port_is_free(p) for p in cluster.ports())


async def test_a_close_step_that_hangs_is_reported_where_it_waits_then_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inprocess, "CLOSE_STEP_TIMEOUT_S", 0.2)
    cancelled = asyncio.Event()

    async def stop_that_hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def stop_that_fails() -> None:
        raise RuntimeError("engine would not close")

    errors: list[BaseException] = []
    await InProcessCluster._close_step("stopping node x", stop_that_hangs(), errors)
    await InProcessCluster._close_step("stopping node y", stop_that_fails(), errors)
    assert cancelled.is_set()
    hung, failed = errors
    assert "stopping node x did not finish within 0.2s" in str(hung)
    assert "test_harness.py:" in str(hung)  # the hung step's own frame, not only its children
    assert isinstance(failed, RuntimeError)


async def test_nodes_in_one_process_keep_their_metrics_apart(cluster: InProcessCluster) -> None:
    fra = cluster.client("fra-1")
    for i in range(3):
        await fra.put(b"m/%d" % i, b"v")
    puts = "edgekv_requests_total"
    assert cluster.metric("fra-1", puts, method="Put", code="OK") == 3
    assert cluster.metric("iad-1", puts, method="Put") == 0
    await cluster.wait_until(
        lambda: cluster.metric("iad-1", "edgekv_log_last_seq") == 0
        and cluster.dump("iad-1", b"m/").keys() == {b"m/0", b"m/1", b"m/2"},
        what="m/ replicated to iad-1, which logged nothing itself",
    )  # fmt: skip
    assert cluster.metric("fra-1", "edgekv_log_last_seq") == 3


async def test_link_delay_applies_to_forwarded_calls(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(placement=(("eu/", ["eu-west"]),))
    iad = cluster.client("iad-1")
    await iad.put(b"eu/d", b"v")  # the forwarding channel to fra-1 is connected now
    cluster.set_delay("iad-1", "fra-1", 100)
    started = time.monotonic()
    got = await iad.get(b"eu/d")
    elapsed_s = time.monotonic() - started
    assert got is not None and got.served_by == "fra-1"
    assert elapsed_s >= 0.2  # 100 ms each way on the wire
    cluster.set_delay("iad-1", "fra-1", 0)


async def test_stopped_node_is_restarted_on_the_same_address(cluster: InProcessCluster) -> None:
    endpoint = cluster.node("nrt-1").view.endpoint
    await cluster.restart("nrt-1")
    assert cluster.node("nrt-1").view.endpoint == endpoint == cluster.endpoint("nrt-1")
    assert (await cluster.client("nrt-1").put(b"x", b"1")).served_by == "nrt-1"
    await cluster.assert_converged(b"x")
    # The stopped instance left no task behind: nrt-1 runs as many as its peers.
    per_node = Counter(t.get_name().split(":")[0] for t in cluster.running_tasks())
    assert per_node["nrt-1"] == per_node["fra-1"] == per_node["iad-1"] > 0
