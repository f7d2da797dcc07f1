"""Shipped batches never end inside a Write (so a Write stays atomic on peers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.replication.sender import whole_writes
from edgekv.storage.engine import DeleteOp, Engine, PutOp


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def test_a_batch_that_ends_inside_a_write_is_extended_to_its_end(engine: Engine) -> None:
    engine.put(b"before", b"v")  # seq 1
    engine.write([PutOp(b"w%02d" % i, b"v") for i in range(20)] + [DeleteOp(b"before")])  # 2..22
    engine.put(b"after", b"v")  # seq 23
    batch = whole_writes(engine, engine.read_log(1, 8), 8)
    assert [e.seq for e in batch] == list(range(1, 23))


def test_a_batch_that_ends_on_a_write_boundary_is_unchanged(engine: Engine) -> None:
    for i in range(5):
        engine.put(b"k%d" % i, b"v")
    batch = whole_writes(engine, engine.read_log(1, 3), 3)
    assert [e.seq for e in batch] == [1, 2, 3]


def test_a_write_at_the_end_of_the_log(engine: Engine) -> None:
    engine.write([PutOp(b"w%d" % i, b"v") for i in range(10)])
    assert [e.seq for e in whole_writes(engine, engine.read_log(1, 4), 4)] == list(range(1, 11))


def test_a_short_read_reached_the_end_of_the_log_and_is_not_extended(engine: Engine) -> None:
    engine.write([PutOp(b"w%d" % i, b"v") for i in range(3)])
    entries = engine.read_log(1, 8)
    engine.put(b"later", b"v")  # a new Write, committed after the read
    assert [e.seq for e in whole_writes(engine, entries, 8)] == [1, 2, 3]


def test_no_entries(engine: Engine) -> None:
    assert whole_writes(engine, [], 8) == []
