"""edgekv.replication.trimmer on a real RocksDB in tmp_path, with a settable wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clockfake import FakeTime

from edgekv.replication.trimmer import LogTrimmer
from edgekv.storage.engine import Engine

HOUR_S = 3600.0


@pytest.fixture
def engine(tmp_path: Path, wall: FakeTime) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "n1")
    for i in range(10):
        eng.put(b"k%d" % i, b"v")
    yield eng
    eng.close()


def trimmer(engine: Engine, acked: list[int], **bounds: float) -> LogTrimmer:
    settings = {"interval_s": 5.0, "retention_entries": 1_000_000, "retention_s": 24 * HOUR_S}
    return LogTrimmer(engine, lambda: acked, **{**settings, **bounds})  # type: ignore[arg-type]


def test_trim_keeps_what_a_peer_has_not_acknowledged(engine: Engine) -> None:
    trimmer(engine, [4, 7]).trim_once()
    assert engine.first_log_seq() == 5
    assert [e.seq for e in engine.read_log(0)] == list(range(5, 11))


def test_trim_without_peers_empties_the_log(engine: Engine) -> None:
    trimmer(engine, []).trim_once()
    assert engine.first_log_seq() == engine.last_seq + 1 == 11


def test_trim_beyond_retention_entries_drops_unacknowledged_entries(engine: Engine) -> None:
    trimmer(engine, [0], retention_entries=3).trim_once()
    assert engine.first_log_seq() == 8


def test_trim_nothing_acknowledged_within_bounds_keeps_everything(engine: Engine) -> None:
    trimmer(engine, [0, 9]).trim_once()
    assert engine.first_log_seq() == 1


def test_seq_older_than_finds_entries_past_the_age_bound(engine: Engine, wall: FakeTime) -> None:
    trim = trimmer(engine, [0], retention_s=HOUR_S)
    assert trim.seq_older_than(HOUR_S) == 0
    wall.ms += int(2 * HOUR_S * 1000)
    # Coarse: probes every 4096th seq from the oldest, so it finds seq 1 here.
    assert trim.seq_older_than(HOUR_S) == 1
    trim.trim_once()
    assert engine.first_log_seq() == 2
