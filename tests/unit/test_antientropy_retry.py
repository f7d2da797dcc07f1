"""A failed anti-entropy sync is retried after 1, 2, 4 ... s, one retry pending per peer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.replication.antientropy import RETRY_FIRST_S, AntiEntropy
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
