"""Engine behaviour on a real RocksDB in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgekv import native
from edgekv.errors import CorruptRecord, FailedPrecondition, InvalidArgument, StorageError
from edgekv.limits import Limits
from edgekv.storage.clock import LOGICAL_BITS, ClockSkewError
from edgekv.storage.engine import DeleteOp, Engine, EngineOptions, PutOp, prefix_end
from edgekv.storage.record import Version

MiB = 1024 * 1024


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng  # type: ignore[misc]
    eng.close()


def remote_record(ts: int, origin: str, value: bytes = b"v", tombstone: bool = False) -> bytes:
    return native.encode_record(tombstone, ts, 0, origin.encode(), b"" if tombstone else value)


def now_ts() -> int:
    return (time.time_ns() // 1_000_000) << LOGICAL_BITS


def test_put_get_returns_value_and_version(engine: Engine) -> None:
    version = engine.put(b"k", b"v")
    assert version.origin == "node-a"
    assert engine.get(b"k") == (b"v", version.timestamp, "node-a", 0)
    assert engine.get_item(b"k").version == version  # type: ignore[union-attr]
    assert engine.get(b"missing") is None


def test_versions_strictly_increase(engine: Engine) -> None:
    stamps = [engine.put(b"k%d" % i, b"v").timestamp for i in range(200)]
    assert stamps == sorted(set(stamps))


def test_ttl_expires_and_reads_absent(engine: Engine) -> None:
    engine.put(b"t", b"v", ttl_ms=50)
    value = engine.get(b"t")
    assert value is not None and value[3] > 0
    time.sleep(0.08)
    assert engine.get(b"t") is None
    assert engine.get_record(b"t") is not None  # still a version until collected
    assert engine.scan().items == []


def test_tombstone_hides_value_and_survives_reopen(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    eng.put(b"k", b"v")
    eng.delete(b"k")
    assert eng.get(b"k") is None
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    assert eng.get(b"k") is None
    tombstone, *_ = native.decode_record(eng.get_record(b"k"))  # type: ignore[arg-type]
    assert tombstone
    eng.close()


def test_write_batch_is_atomic_and_one_version(engine: Engine) -> None:
    engine.put(b"old", b"x")
    version = engine.write([PutOp(b"a", b"1"), PutOp(b"b", b"2", 60_000), DeleteOp(b"old")])
    assert engine.get(b"a")[1] == engine.get(b"b")[1] == version.timestamp  # type: ignore[index]
    assert engine.get(b"old") is None


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([PutOp(b"a", b"1"), PutOp(b"", b"2")], "key is empty"),
        ([PutOp(b"a", b"1"), PutOp(b"b", b"x" * (MiB + 1))], "1048576 (max_value_bytes)"),
        ([PutOp(b"a", b"1"), DeleteOp(b"a")], "appears twice"),
        ([PutOp(b"a", b"1"), PutOp(b"b", b"2", -5)], "ttl_ms"),
        ([], "batch is empty"),
    ],
)
def test_failing_batch_writes_nothing(engine: Engine, ops: list[PutOp], message: str) -> None:
    seq = engine.last_seq
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.write(ops)
    assert engine.get(b"a") is None and engine.last_seq == seq and engine.read_log(1) == []


def test_limits_keys_and_values(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "db", "n", EngineOptions(limits=Limits(max_value_bytes=10)))
    try:
        eng.put(b"k" * 1024, b"x" * 10)
        with pytest.raises(InvalidArgument, match="key is 1025 bytes; the limit is 1024"):
            eng.put(b"k" * 1025, b"x")
        with pytest.raises(
            InvalidArgument, match=r"value is 11 bytes; the limit is 10 \(max_value_bytes\)"
        ):
            eng.put(b"k", b"x" * 11)
        with pytest.raises(InvalidArgument, match="key must be bytes"):
            eng.put("k", b"x")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="max_batch_ops"):
            eng.get_many([b"k"] * 1001)
    finally:
        eng.close()


def test_log_records_writes_in_order_and_trims(engine: Engine) -> None:
    v1 = engine.put(b"a", b"1")
    engine.write([PutOp(b"b", b"2"), DeleteOp(b"c")])
    log = engine.read_log(1)
    assert [(e.seq, e.key) for e in log] == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert native.decode_record(log[0].record) == (False, v1.timestamp, 0, "node-a", b"1")
    assert native.decode_record(log[2].record)[0] is True
    assert engine.read_log(2, 1)[0].key == b"b"
    assert engine.last_seq == 3 and engine.first_log_seq() == 1
    engine.trim_log(3)
    assert [e.seq for e in engine.read_log(0)] == [3] and engine.first_log_seq() == 3
    engine.trim_log(100)
    assert engine.read_log(0) == [] and engine.first_log_seq() == 4


def test_reopen_keeps_seq_clock_and_data(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    last = eng.put(b"k", b"v")
    eng.apply(b"r", remote_record(now_ts() + (100 << LOGICAL_BITS), "node-b"))
    high = eng.clock.last
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    try:
        assert eng.last_seq == 1 and eng.clock.last >= high > last.timestamp
        assert eng.put(b"k2", b"v").timestamp > high
        assert eng.read_log(2)[0].seq == 2
    finally:
        eng.close()


def test_data_dir_of_another_node_refused(tmp_path: Path) -> None:
    Engine(tmp_path / "db", "node-a").close()
    with pytest.raises(FailedPrecondition, match="belongs to node 'node-a'"):
        Engine(tmp_path / "db", "node-b")
    Engine(tmp_path / "db", "node-a").close()  # the refusal left it usable


def test_open_twice_is_a_storage_error(engine: Engine) -> None:
    with pytest.raises(StorageError, match="cannot open RocksDB"):
        Engine(engine.path, "node-a")


def test_apply_last_writer_wins_and_idempotent(engine: Engine) -> None:
    base = now_ts()
    older, newer = remote_record(base, "node-b", b"old"), remote_record(base + 5, "node-b", b"new")
    assert engine.apply(b"k", newer)
    assert not engine.apply(b"k", older)  # older loses
    assert not engine.apply(b"k", newer)  # same record again: no change
    assert engine.get(b"k")[0] == b"new"  # type: ignore[index]
    tie = remote_record(base + 5, "node-c", b"tie")  # same timestamp: greater origin wins
    assert engine.apply(b"k", tie) and engine.get(b"k")[0] == b"tie"  # type: ignore[index]
    assert engine.apply(b"k", remote_record(base + 6, "node-b", tombstone=True))
    assert engine.get(b"k") is None
    assert engine.clock.last >= base + 6
    assert engine.read_log(1) == []  # applied records are not re-shipped


def test_apply_many_dedupes_within_a_batch(engine: Engine) -> None:
    base = now_ts()
    changed = engine.apply_many(
        [(b"k", remote_record(base + 2, "b", b"2")), (b"k", remote_record(base + 1, "b", b"1"))]
    )
    assert changed == 1 and engine.get(b"k")[0] == b"2"  # type: ignore[index]


def test_apply_refuses_far_future_timestamp(engine: Engine) -> None:
    future = now_ts() + (10_000 << LOGICAL_BITS)
    with pytest.raises(ClockSkewError, match="max_clock_skew_ms"):
        engine.apply_many(
            [(b"ok", remote_record(now_ts(), "b")), (b"f", remote_record(future, "b"))]
        )
    assert engine.get(b"ok") is None and engine.get(b"f") is None
    assert engine.clock.rejected_count == 1


def test_apply_rejects_corrupt_record(engine: Engine) -> None:
    with pytest.raises(CorruptRecord):
        engine.apply(b"k", b"\x07garbage")
    assert engine.get_record(b"k") is None


def test_corrupt_stored_record_raises_on_read(engine: Engine) -> None:
    engine._db.put(b"bad", b"\x02" + b"not a record, just bytes")
    with pytest.raises(CorruptRecord, match="format version 2"):
        engine.get(b"bad")


def test_scan_ranges_prefix_and_paging(engine: Engine) -> None:
    engine.write([PutOp(b"p/%02d" % i, b"%d" % i) for i in range(30)])
    engine.write([DeleteOp(b"p/%02d" % i) for i in range(5, 25)])
    engine.put(b"q/0", b"x")
    seen, start = [], b"p/"
    while True:
        page = engine.scan(start, prefix_end(b"p/"), limit=3)
        seen += [i.key for i in page.items]
        if page.next_start is None:
            break
        start = page.next_start
    assert seen == [b"p/%02d" % i for i in [*range(5), *range(25, 30)]]
    assert [i.key for i in engine.scan_prefix(b"q/").items] == [b"q/0"]
    with pytest.raises(InvalidArgument, match="max_scan_limit"):
        engine.scan(limit=10_001)
    with pytest.raises(InvalidArgument, match="scan range is empty"):
        engine.scan(b"b", b"a")


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b""


def test_digests_match_rebuild_and_survive_reopen(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    for i in range(300):
        eng.put(b"d%d" % i, b"v")
    eng.write([DeleteOp(b"d1"), PutOp(b"d2", b"again")])
    eng.apply(b"r", remote_record(now_ts(), "node-b"))
    groups = eng.group_digests(b"")
    eng.rebuild_digests()
    assert eng.group_digests(b"") == groups
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    assert eng.group_digests(b"") == groups
    bucket = native.key_bucket(b"d2")
    assert (b"d2", eng.get(b"d2")[1], "node-a") in eng.list_bucket(b"", bucket)  # type: ignore[index]
    eng.close()


def test_listener_sees_local_and_applied_changes(engine: Engine) -> None:
    seen: list[tuple[list[bytes], int, bool]] = []
    engine.add_listener(
        lambda changes, seq, local: seen.append(([c.key for c in changes], seq, local))
    )
    engine.put(b"a", b"1")
    engine.apply(b"b", remote_record(now_ts(), "node-b"))
    assert seen == [([b"a"], 1, True), ([b"b"], 1, False)]


def test_write_group_isolates_bad_batches(engine: Engine) -> None:
    results = engine.write_group([[PutOp(b"g1", b"1")], [PutOp(b"", b"x")], [DeleteOp(b"g1")]])
    assert isinstance(results[0], Version) and isinstance(results[2], Version)
    assert isinstance(results[1], InvalidArgument)
    assert results[2].timestamp > results[0].timestamp  # type: ignore[union-attr]
    assert engine.get(b"g1") is None and engine.last_seq == 2


def test_cursors_persist(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "db", "node-a")
    eng.save_cursor("node-b", 42)
    eng.close()
    eng = Engine(tmp_path / "db", "node-a")
    assert eng.load_cursor("node-b") == 42 and eng.load_cursor("node-c") == 0
    eng.close()
