"""The change feed (storage/feed.py): every visible change, durable, bounded, restart-safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekv import native
from edgekv.storage.engine import Engine
from edgekv.storage.feed import decode_vector, encode_vector, merge_vectors, origin_and_timestamp


def _keys(engine: Engine, from_seq: int = 1) -> list[bytes]:
    return [e.key for e in engine.feed.read(from_seq, 10_000)]


def test_feed_holds_local_writes_and_applied_records_in_order(tmp_path: Path) -> None:
    a, b = Engine(tmp_path / "a", "a"), Engine(tmp_path / "b", "b")
    try:
        a.put(b"k1", b"v1")
        a.delete(b"k1")
        b.put(b"own", b"x")
        assert b.apply_many([(k, r) for k, r in a.records([b"k1"])]) == 1
        assert _keys(a) == [b"k1", b"k1"]
        assert _keys(b) == [b"own", b"k1"]
        entries = b.feed.read(1)
        assert [e.seq for e in entries] == [1, 2]
        assert native.decode_record(entries[1].record)[0] is True  # the tombstone, as applied
        assert b.feed.head.seq == 2
        assert set(b.feed.head.vector) == {"a", "b"}
    finally:
        a.close()
        b.close()


def test_feed_skips_a_record_that_loses(tmp_path: Path) -> None:
    a, b = Engine(tmp_path / "a", "a"), Engine(tmp_path / "b", "b")
    try:
        a.put(b"k", b"old")
        old = a.records([b"k"])
        b.put(b"k", b"newer")  # a later HLC time than a's write
        assert b.apply_many(old) == 0
        assert _keys(b) == [b"k"]  # only its own write: the loser never became visible
    finally:
        a.close()
        b.close()


def test_feed_survives_a_restart_and_keeps_its_seq_and_epoch(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    for i in range(5):
        engine.put(b"k%d" % i, b"v")
    head, epoch = engine.feed.head, engine.feed.epoch
    engine.close()
    engine = Engine(tmp_path / "db", "n1")
    try:
        assert engine.feed.head == head and engine.feed.epoch == epoch
        engine.put(b"k5", b"v")
        assert [e.seq for e in engine.feed.read(1)] == [1, 2, 3, 4, 5, 6]
    finally:
        engine.close()


def test_feed_trim_by_count_records_what_it_dropped(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        for i in range(10):
            engine.put(b"k%d" % i, b"v" * 100)
        fourth_ts = origin_and_timestamp(engine.feed.read(4, 1)[0].record)[1]
        held = engine.feed.head.held_bytes
        assert engine.feed.trim(max_entries=6, max_bytes=1 << 30, max_age_ms=1 << 40) == 4
        assert engine.feed.first_seq() == 5
        assert engine.feed.trimmed.seq == 4
        assert engine.feed.trimmed.vector == {"n1": fourth_ts}
        assert engine.feed.head.held_bytes < held
        assert _keys(engine) == [b"k%d" % i for i in range(4, 10)]
        engine.close()
        engine = Engine(tmp_path / "db", "n1")
        assert engine.feed.trimmed.seq == 4 and engine.feed.first_seq() == 5
    finally:
        engine.close()


def test_feed_trim_by_bytes_and_by_age(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        for i in range(10):
            engine.put(b"k%d" % i, b"v" * 1000)
        assert engine.feed.trim(max_entries=100, max_bytes=3500, max_age_ms=1 << 40) == 7
        assert len(_keys(engine)) == 3
        assert engine.feed.trim(max_entries=100, max_bytes=1 << 30, max_age_ms=1 << 40) == 0
        assert engine.feed.trim(max_entries=100, max_bytes=1 << 30, max_age_ms=-1) == 3
        assert _keys(engine) == [] and engine.feed.first_seq() == 11
    finally:
        engine.close()


def test_feed_trim_steps_off_the_gil_while_it_walks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trim runs on a worker thread: it pauses every TRIM_STEP_ENTRIES entries, so the
    event loop waits at most a step for the GIL, not the interpreter's switch interval."""
    from edgekv.storage import feed

    pauses: list[float] = []
    monkeypatch.setattr(feed.time, "sleep", pauses.append)
    engine = Engine(tmp_path / "db", "n1")
    try:
        for i in range(100):
            engine.put(b"k%03d" % i, b"v" * 100)
        assert engine.feed.trim(max_entries=4, max_bytes=1 << 30, max_age_ms=1 << 40) == 96
        assert len(pauses) >= 96 // feed.TRIM_STEP_ENTRIES
        assert all(0 < p <= 0.001 for p in pauses)
        assert _keys(engine) == [b"k%03d" % i for i in range(96, 100)]
    finally:
        engine.close()


def test_vector_codec_roundtrip_and_merge() -> None:
    vector = {"b": 7, "a": 1 << 63, "ccc": 0}
    raw = encode_vector(vector)
    assert decode_vector(raw) == (vector, len(raw))
    assert merge_vectors({"a": 1, "b": 9}, {"a": 3, "c": 2}) == {"a": 3, "b": 9, "c": 2}
    with pytest.raises(ValueError):
        decode_vector(raw[:-3])


def test_feed_head_is_recovered_past_its_checkpoint(tmp_path: Path) -> None:
    """The write path stages entries only; a crash after the checkpoint loses no position."""
    from edgekv.storage.feed import ChangeLog

    engine = Engine(tmp_path / "db", "n1")
    try:
        for i in range(5):
            engine.put(b"k%d" % i, b"v")
        engine.feed.trim(max_entries=100, max_bytes=1 << 30, max_age_ms=1 << 40)  # checkpoint
        engine.put(b"late", b"v")
        engine.apply_many([(b"x", _record_from(tmp_path, "other"))])
        reopened = ChangeLog(
            engine._db, (engine._meta, engine._meta_handle), engine._lock, engine._write_batch, int
        )  # what a restart after kill -9 reads: the checkpoint, then the entries past it
        assert reopened.head == engine.feed.head
        assert reopened.head.seq == 7 and set(reopened.head.vector) == {"n1", "other"}
    finally:
        engine.close()


def _record_from(tmp_path: Path, node: str) -> bytes:
    other = Engine(tmp_path / node, node)
    try:
        other.put(b"x", b"from " + node.encode())
        return other.records([b"x"])[0][1]
    finally:
        other.close()


def test_a_restored_copy_gets_a_new_feed_epoch(tmp_path: Path) -> None:
    """Its seqs diverge from the original's: tokens of either resume by vector, not seq."""
    from edgekv.storage.backup import create_checkpoint, restore

    engine = Engine(tmp_path / "db", "n1")
    try:
        engine.put(b"k", b"v")
        epoch, head = engine.feed.epoch, engine.feed.head
        create_checkpoint(engine, tmp_path / "backup")
    finally:
        engine.close()
    restore(tmp_path / "backup", tmp_path / "restored", "n1")
    copy = Engine(tmp_path / "restored", "n1")
    try:
        assert copy.feed.epoch != epoch
        assert copy.feed.head == head and _keys(copy) == [b"k"]
    finally:
        copy.close()
