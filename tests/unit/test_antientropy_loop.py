"""The anti-entropy loop: retries after a failure (1, 2, 4 ... s, one pending per peer), sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.replication.antientropy import RETRY_FIRST_S, AntiEntropy
from edgekv.replication.reconcile import SyncStats
from edgekv.replication.refusals import PeerRefusals
from edgekv.storage.engine import Engine
from edgekv.v1 import replication_pb2


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(str(tmp_path / "data"), "fra-1")
    yield engine
    engine.close()


def loop_of(engine: Engine, interval_s: float) -> AntiEntropy:
    return AntiEntropy(
        engine,
        hello=replication_pb2.PeerHello(node_id="fra-1"),
        peers=["iad-1", "nrt-1"],
        stub_for=lambda peer: pytest.fail("no sync runs in these tests"),
        placements_with=lambda peer: [b""],
        interval_s=interval_s,
        may_hold=lambda key: True,
        refusals=PeerRefusals(),
    )


async def test_retries_back_off_to_the_interval_one_pending_per_peer(engine: Engine) -> None:
    antientropy = loop_of(engine, interval_s=30.0)
    loop = asyncio.get_running_loop()
    state = antientropy.state["nrt-1"]
    pending = []
    for failure in range(1, 6):  # delays 1, 2, 4, 8, 16 s, jittered down to half
        before = loop.time()
        antientropy._failed("nrt-1", f"UNAVAILABLE {failure}")
        assert state.retry is not None
        pending.append(state.retry)
        delay = state.retry.when() - before
        full = RETRY_FIRST_S * 2 ** (failure - 1)
        assert full / 2 - 0.01 <= delay <= full + 0.01
    assert all(handle.cancelled() for handle in pending[:-1])  # never more than one
    antientropy._failed("nrt-1", "UNAVAILABLE 6")  # 32 s: the interval's syncs take over
    assert pending[-1] is state.retry and not state.retry.cancelled()
    assert (state.failed_syncs, state.failures_in_a_row, state.last_error) == (
        6, 6, "UNAVAILABLE 6"
    )  # fmt: skip
    assert antientropy.state["iad-1"].retry is None  # each peer on its own
    state.retry.cancel()


async def test_a_retry_asks_for_that_peer_only(engine: Engine) -> None:
    antientropy = loop_of(engine, interval_s=30.0)
    antientropy._due.clear()
    antientropy._kick.clear()
    antientropy._failed("nrt-1", "UNAVAILABLE")
    assert antientropy.state["nrt-1"].retry is not None
    await asyncio.sleep(RETRY_FIRST_S + 0.05)
    assert antientropy._kick.is_set() and antientropy._due == {"nrt-1"}


async def test_syncs_of_one_peer_in_between_do_not_put_off_the_sweep_of_all(
    engine: Engine,
) -> None:
    # Retries (here: triggers every 0.1 s) of a failing peer used to restart the
    # interval each time: the healthy peer was not synced again while they went on.
    antientropy = loop_of(engine, interval_s=1.0)
    synced: list[str] = []

    async def sync_peer(peer_id: str) -> SyncStats:
        synced.append(peer_id)
        return SyncStats()

    antientropy.sync_peer = sync_peer  # type: ignore[method-assign]
    task = asyncio.create_task(antientropy.run_antientropy())
    try:
        for _ in range(25):  # 2.5 s: the sweep of every peer comes after 0.75-1.25 s
            antientropy.trigger("nrt-1")
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert synced.count("iad-1") >= 2, synced
    assert all(
        state.retry is None or state.retry.cancelled() for state in antientropy.state.values()
    )


async def test_a_full_disk_waits_for_the_next_sweep(engine: Engine) -> None:
    antientropy = loop_of(engine, interval_s=30.0)
    antientropy._failed("nrt-1", "disk full", retry=False)
    assert antientropy.state["nrt-1"].retry is None and antientropy.state["nrt-1"].failed_syncs == 1
