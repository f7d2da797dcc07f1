"""edgekv.storage.digest: the digest index kept by the engine, rebuilt, reopened."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekv import native
from edgekv.storage.clock import LOGICAL_BITS
from edgekv.storage.engine import DeleteOp, Engine, EngineSettings, PutOp


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


def test_digests_match_rebuild_and_survive_reopen(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    for i in range(300):
        eng.put(b"d%d" % i, b"v")
    eng.write([DeleteOp(b"d1"), PutOp(b"d2", b"again")])
    eng.apply(b"r", remote(now_hlc()))
    groups = eng.digests.segment_digests(b"")
    eng.digests.rebuild()
    assert eng.digests.segment_digests(b"") == groups
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.digests.segment_digests(b"") == groups
        bucket = native.key_bucket(b"d2")
        assert (b"d2", eng.get(b"d2")[1], "node-a") in eng.digests.list_bucket(b"", bucket)  # type: ignore[index]
    finally:
        eng.close()


def test_reopen_with_changed_placement_rules_regroups_digests(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.put(b"eu/1", b"v")
    eng.put(b"us/1", b"v")
    eng.close()

    def by_prefix(key: bytes) -> bytes:
        return b"eu" if key.startswith(b"eu/") else b""

    eng = open_engine(tmp_path / "db", placement_of=by_prefix, placement_fingerprint=b"rules-2")
    try:
        assert eng.digests.placements() == [b"", b"eu"]
        eu_bucket = native.key_bucket(b"eu/1")
        assert [k for k, _, _ in eng.digests.list_bucket(b"eu", eu_bucket)] == [b"eu/1"]
        assert b"eu/1" not in [k for k, _, _ in eng.digests.list_bucket(b"", eu_bucket)]
    finally:
        eng.close()
