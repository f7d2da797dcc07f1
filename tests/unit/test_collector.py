"""edgekv.replication.collector on a real engine: the horizon waits for max(died, arrived here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clockfake import FakeTime

from edgekv import native
from edgekv.replication.collector import Collector
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import Engine

GRACE_MS = 10_000


@pytest.fixture
def engine(tmp_path: Path, wall: FakeTime) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def tombstone(ms: int) -> bytes:
    return native.encode_record(True, ms << LOGICAL_BITS, 0, b"node-b", b"")


async def test_tombstone_that_arrived_after_a_peers_sync_waits_for_its_next_sync(
    engine: Engine, wall: FakeTime
) -> None:
    died = wall.ms
    synced = {"node-c": died + 1_000}  # node-c's last sync with us started after the death...
    wall.ms = died + 2_000
    engine.apply(b"k", tombstone(died))  # ...but before the tombstone reached us
    collector = Collector(
        engine, grace_s=GRACE_MS / 1000, interval_s=1, peers_synced_from_ms=lambda: synced
    )
    wall.ms = died + GRACE_MS + 5_000
    assert collector.horizon_now() == died + 1_000  # past its death
    # node-c never got the tombstone from us and may still hold the value: keep it.
    assert await collector.collect_once() == 0
    assert engine.get_record(b"k") is not None
    synced["node-c"] = wall.ms  # a sync that started after it arrived
    wall.ms += GRACE_MS
    assert await collector.collect_once() == 1
    assert engine.get_record(b"k") is None
