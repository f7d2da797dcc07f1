"""storage/recovery.py: a store that failed a write refuses writes, and Engine.reopen
brings it back in place. (The real full disk is tests/integration/test_disk_full.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.errors import DiskFull, StorageError
from edgekv.storage.engine import Engine
from edgekv.storage.record import Change
from edgekv.storage.recovery import StorageState

ENOSPC = Exception(
    "IO error: No space left on device: While appending to file: /d/000004.log: "
    "No space left on device"
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(tmp_path / "db", "n1") as e:
        yield e


def test_no_space_error_degrades_with_disk_full_naming_the_directory(tmp_path: Path) -> None:
    state = StorageState(tmp_path, "n1")
    err = state.write_failed(ENOSPC)
    assert isinstance(err, DiskFull)
    assert state.degraded and state.disk_full
    assert f"data directory {tmp_path} is full" in str(err)
    with pytest.raises(DiskFull, match="write through another PoP"):
        state.check_writable()
    assert state.refused_writes == 1
    state.reopened()
    state.check_writable()
    assert not state.degraded and state.reopens_total == 1


def test_non_io_error_does_not_degrade(tmp_path: Path) -> None:
    state = StorageState(tmp_path, "n1")
    err = state.write_failed(Exception("Invalid argument: bad batch"))
    assert type(err) is StorageError and not state.degraded


def test_degraded_engine_refuses_writes_before_rocksdb_and_reopen_restores(
    engine: Engine,
) -> None:
    v1 = engine.put(b"k", b"1")
    engine.storage.write_failed(ENOSPC)
    with pytest.raises(DiskFull):
        engine.put(b"k", b"2")
    with pytest.raises(DiskFull):
        engine.apply_many([(b"r", engine.get_record(b"k") or b"")])
    assert engine.last_seq == 1 and engine.get(b"k")[0] == b"1"  # reads served
    engine.reopen()
    assert not engine.storage.degraded
    v3 = engine.put(b"k", b"3")
    assert v3.timestamp > v1.timestamp and engine.last_seq == 2


def test_reopen_keeps_data_log_clock_listeners_and_the_bound_read_path(engine: Engine) -> None:
    for i in range(50):
        engine.put(b"k%d" % i, b"v%d" % i)
    engine.delete(b"k7")
    get, clock = engine.get, engine.clock  # held by the request layer and membership
    seen: list[list[Change]] = []
    engine.add_listener(lambda changes, seq, local: seen.append(changes))
    digests = engine.digests.segment_digests(b"")
    engine.reopen()
    assert engine.clock is clock
    assert get(b"k3")[0] == b"v3" and get(b"k7") is None
    assert engine.last_seq == 51 and [e.seq for e in engine.read_log(50)] == [50, 51]
    assert engine.digests.segment_digests(b"") == digests
    engine.put(b"k3", b"new")
    assert get(b"k3")[0] == b"new" and engine.last_seq == 52 and len(seen) == 1
