"""edgekv.storage.quarantine through Engine.apply_many: skewed records are set aside one by one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from clockfake import FakeTime

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS, ClockSkewError
from edgekv.storage.engine import Engine
from edgekv.storage.quarantine import QUARANTINE_PREFIX

BOUND = 500


@pytest.fixture
def engine(tmp_path: Path, wall: FakeTime) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def remote(ms: int, origin: str = "node-b", value: bytes = b"v") -> bytes:
    return native.encode_record(False, ms << LOGICAL_BITS, 0, origin.encode(), value)


def held_keys(eng: Engine) -> list[bytes]:
    """Keys held in the meta column family under the quarantine prefix."""
    it = eng._meta.iter()  # the column family the quarantine writes
    it.seek(QUARANTINE_PREFIX)
    keys = []
    while it.valid() and it.key().startswith(QUARANTINE_PREFIX):
        keys.append(it.key()[len(QUARANTINE_PREFIX) :])
        it.next()
    return keys


def test_skewed_record_set_aside_and_the_rest_of_the_batch_applied(
    engine: Engine, wall: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    far = remote(wall.ms + BOUND + 1_000, "node-c", b"secret-value")
    with caplog.at_level(logging.WARNING):
        changed = engine.apply_many(
            [(b"a", remote(wall.ms)), (b"far", far), (b"b", remote(wall.ms + 10))],
            quarantine_skewed=True,
        )
    assert changed == 2
    assert engine.get(b"a") is not None and engine.get(b"b") is not None
    assert engine.get(b"far") is None and engine.get_record(b"far") is None
    assert held_keys(engine) == [b"far"]
    assert engine.quarantine.held == 1 and engine.quarantine.set_aside_total == 1
    # The clock did not jump to the skewed timestamp, and nothing was "rejected".
    assert engine.clock.last >> LOGICAL_BITS == wall.ms + 10
    assert engine.clock.rejected_count == 0
    # Reported with origin and count, never the value.
    assert "node-c: 1" in caplog.text and "secret-value" not in caplog.text


def test_strict_apply_still_refuses_the_whole_batch(engine: Engine, wall: FakeTime) -> None:
    with pytest.raises(ClockSkewError):
        engine.apply_many([(b"a", remote(wall.ms)), (b"far", remote(wall.ms + BOUND + 1))])
    assert engine.get(b"a") is None and held_keys(engine) == []


def test_quarantined_record_released_once_the_clock_catches_up(
    engine: Engine, wall: FakeTime
) -> None:
    far_ms = wall.ms + 5_000
    engine.apply_many([(b"far", remote(far_ms))], quarantine_skewed=True)
    assert engine.apply_many((), quarantine_skewed=True) == 0  # not due yet
    assert engine.quarantine.held == 1
    wall.ms = far_ms - BOUND  # now within the bound
    assert engine.apply_many((), quarantine_skewed=True) == 1
    assert engine.get(b"far") is not None
    assert held_keys(engine) == [] and engine.quarantine.held == 0
    assert engine.quarantine.released_total == 1
    assert engine.clock.last >> LOGICAL_BITS == far_ms


def test_released_record_still_loses_to_a_newer_version(engine: Engine, wall: FakeTime) -> None:
    far_ms = wall.ms + 5_000
    engine.apply_many([(b"k", remote(far_ms, value=b"old"))], quarantine_skewed=True)
    wall.ms = far_ms + 100
    newer = remote(far_ms + 50, value=b"new")
    # The release and a newer record in the same call: LWW keeps the newer one.
    assert engine.apply_many([(b"k", newer)], quarantine_skewed=True) == 1
    assert engine.get_record(b"k") == newer and engine.quarantine.held == 0


def test_only_the_greatest_skewed_version_per_key_is_kept(engine: Engine, wall: FakeTime) -> None:
    a, b = remote(wall.ms + 2_000, value=b"1"), remote(wall.ms + 3_000, value=b"2")
    engine.apply_many([(b"k", b), (b"k", a)], quarantine_skewed=True)
    engine.apply_many([(b"k", a)], quarantine_skewed=True)  # an older one later: ignored
    assert engine.quarantine.held == 1
    wall.ms += 3_000
    engine.apply_many((), quarantine_skewed=True)
    assert engine.get_record(b"k") == b


def test_quarantine_survives_reopen(tmp_path: Path, wall: FakeTime) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    eng.apply_many([(b"far", remote(wall.ms + 5_000))], quarantine_skewed=True)
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    try:
        assert eng.quarantine.held == 1 and eng.quarantine.earliest_ms == wall.ms + 5_000
        wall.ms += 5_000
        assert eng.apply_many((), quarantine_skewed=True) == 1
    finally:
        eng.close()


def test_quarantine_bound_matches_the_clock_bound(engine: Engine, wall: FakeTime) -> None:
    edge = native.encode_record(False, ((wall.ms + BOUND) << LOGICAL_BITS) | 0xFFFF, 0, b"b", b"v")
    beyond = remote(wall.ms + BOUND + 1)
    assert engine.apply_many([(b"edge", edge), (b"beyond", beyond)], quarantine_skewed=True) == 1
    assert engine.get(b"edge") is not None and held_keys(engine) == [b"beyond"]


def test_released_and_newly_skewed_version_of_one_key_in_one_call(
    engine: Engine, wall: FakeTime
) -> None:
    engine.apply_many([(b"k", remote(wall.ms + 2_000, value=b"1"))], quarantine_skewed=True)
    wall.ms += 2_000  # the held one is due; a newer one arrives too far ahead
    newer = remote(wall.ms + 5_000, value=b"2")
    engine.apply_many([(b"k", newer)], quarantine_skewed=True)
    assert engine.get(b"k") is not None  # the released one applied
    assert held_keys(engine) == [b"k"] and engine.quarantine.held == 1
    wall.ms += 5_000
    engine.apply_many((), quarantine_skewed=True)
    assert engine.get_record(b"k") == newer and engine.quarantine.held == 0


# -- residency: a rule change drops set-aside records; the audit sees them ------------


def test_rule_change_drops_set_aside_records_of_refused_keys(
    engine: Engine, wall: FakeTime
) -> None:
    from edgekv.cluster.audit import AuditReport, audit_column_families

    ahead = wall.ms + 10 * BOUND
    engine.apply_many(
        [(b"eu/alice", remote(ahead)), (b"g/x", remote(ahead))], quarantine_skewed=True
    )
    assert held_keys(engine) == [b"eu/alice", b"g/x"]

    def allows(key: bytes) -> bool:  # the new rules: eu/ may no longer be held here
        return not key.startswith(b"eu/")

    def audit() -> AuditReport:
        data, log, index = engine.column_families()
        report = AuditReport("node-a", "us-east")
        return audit_column_families(report, data, log, index, allows, engine.meta_family())

    before = audit()
    assert before.violations == {"meta": 1} and before.samples == [("meta", b"eu/alice")]
    assert engine.purge.drop_quarantined([(b"eu/", b"eu0")]) == 1
    assert held_keys(engine) == [b"g/x"] and engine.quarantine.held == 1
    assert audit().total_violations == 0
    wall.ms = ahead  # the clock catches up: only the allowed record is ever applied
    engine.apply_many([], quarantine_skewed=True)
    assert engine.get(b"eu/alice") is None and engine.get(b"g/x") is not None
