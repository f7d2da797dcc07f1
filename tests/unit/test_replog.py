"""edgekv.storage.replog: the replication log and peer cursors, through the engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clockfake import FakeTime

from edgekv import native
from edgekv.errors import InvalidArgument
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import DeleteOp, Engine, EngineSettings, PutOp
from edgekv.storage.record import Version
from edgekv.storage.replog import LogEntry


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def open_engine(path: Path, node_id: str = "node-a", **options: Any) -> Engine:
    return Engine(path, node_id, EngineSettings(**options))


def remote(timestamp: int, origin: str = "node-b", value: bytes = b"v") -> bytes:
    """A record another node wrote."""
    return native.encode_record(False, timestamp, 0, origin.encode(), value)


def now_hlc() -> int:
    return (time.time_ns() // 1_000_000) << LOGICAL_BITS


def decoded(raw: bytes | None) -> tuple[bool, int, int, str, bytes] | None:
    return None if raw is None else native.decode_record(raw)


def test_read_log_equals_writes_in_order(engine: Engine, wall: FakeTime) -> None:
    writes: list[tuple[bytes, bool, int, bytes, Version]] = []
    v = engine.put(b"a", b"1")
    writes.append((b"a", False, 0, b"1", v))
    v = engine.write([PutOp(b"b", b"2", 5_000), DeleteOp(b"c"), PutOp(b"a", b"3")])
    writes += [(b"b", False, wall.ms + 5_000, b"2", v), (b"c", True, 0, b"", v),
               (b"a", False, 0, b"3", v)]  # fmt: skip
    v = engine.delete(b"a")
    writes.append((b"a", True, 0, b"", v))
    engine.apply(b"remote", remote(now_hlc()))  # not a local write: not logged
    log = engine.read_log(1)
    assert [e.seq for e in log] == list(range(1, len(writes) + 1))
    assert all(isinstance(e, LogEntry) for e in log)
    assert [(e.key, decoded(e.record)) for e in log] == [
        (key, (tombstone, ver.timestamp, expires, "node-a", value))
        for key, tombstone, expires, value, ver in writes
    ]
    assert engine.last_seq == len(writes)


def test_read_log_record_equals_stored_record(engine: Engine) -> None:
    engine.write([PutOp(b"a", b"1"), DeleteOp(b"b")])
    for entry in engine.read_log(0):
        assert entry.record == engine.get_record(entry.key)


def test_read_log_from_seq_and_limit(engine: Engine) -> None:
    for i in range(10):
        engine.put(b"k%d" % i, b"v")
    assert [e.seq for e in engine.read_log(4, 3)] == [4, 5, 6]
    assert [e.seq for e in engine.read_log(0, 2)] == [1, 2]
    assert [e.seq for e in engine.read_log(9)] == [9, 10]
    assert engine.read_log(11) == []


@pytest.mark.parametrize(("from_seq", "limit"), [(-1, 10), (0, 0), (1, -5)])
def test_read_log_invalid_arguments_rejected(engine: Engine, from_seq: int, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="read_log"):
        engine.read_log(from_seq, limit)


def test_first_log_seq_of_empty_log_is_last_seq_plus_one(engine: Engine) -> None:
    assert engine.last_seq == 0 and engine.first_log_seq() == 1
    engine.put(b"k", b"v")
    assert engine.first_log_seq() == 1
    engine.trim_log(2)
    assert engine.read_log(0) == [] and engine.first_log_seq() == 2


def test_trim_log_removes_entries_below_seq(engine: Engine) -> None:
    for i in range(5):
        engine.put(b"k%d" % i, b"v")
    engine.trim_log(3)
    assert [e.seq for e in engine.read_log(0)] == [3, 4, 5] and engine.first_log_seq() == 3
    engine.trim_log(0)  # no-op
    engine.trim_log(2)  # already gone: no-op
    assert engine.first_log_seq() == 3
    engine.trim_log(1_000)  # beyond the end: empties the log, keeps the seq
    assert engine.read_log(0) == [] and engine.last_seq == 5 and engine.first_log_seq() == 6
    assert engine.put(b"next", b"v") and engine.read_log(0)[0].seq == 6


def test_trim_log_survives_reopen(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    for i in range(4):
        eng.put(b"k%d" % i, b"v")
    eng.trim_log(3)
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.first_log_seq() == 3 and eng.last_seq == 4
        assert [e.key for e in eng.read_log(0)] == [b"k2", b"k3"]
    finally:
        eng.close()


def test_cursors_persist_across_reopen(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.save_cursor("node-b", 42)
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.load_cursor("node-b") == 42 and eng.load_cursor("node-c") == 0
    finally:
        eng.close()
