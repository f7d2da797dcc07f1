"""The embedded reader against a real Engine in tmp_path: same answers, residency, staleness.

The node side is the real EmbeddedPublisher on a real Engine (no network);
the reader is the SDK's EmbeddedReader on the same directory, as a co-located
application would open it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgekv
from edgekv.client._types import Entry, Version
from edgekv.client.embedded import FRESH, NETWORK, EmbeddedReader, open_embedded
from edgekv.cluster.placement import PlacementRules
from edgekv.config.loader import load_config
from edgekv.errors import FailedPrecondition, InvalidArgument
from edgekv.local.launcher import write_cluster_file
from edgekv.server.embedded_publisher import EmbeddedPublisher
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.replica_files import MANIFEST_NAME, read_manifest, write_manifest

TWO_REGIONS = (("us", 40.0, -74.0), ("eu", 50.0, 8.0))


class _Node:
    """An Engine with its publisher: what `edgekv serve` leaves in its data_dir."""

    def __init__(self, tmp_path: Path, *, region: str = "us", pinned: bool = False) -> None:
        path = write_cluster_file(
            tmp_path,
            regions=TWO_REGIONS,
            nodes=(("node-1", region), ("node-2", "eu" if region == "us" else "us")),
            placement=(("eu/", ["eu"]),) if pinned else (),
        )
        self.config = load_config(path)
        self.spec = self.config.node("node-1")
        self.placement = PlacementRules.from_config(self.config)
        self.data_dir = Path(self.spec.data_dir)
        self.open()

    def open(self) -> None:
        self.engine = Engine(self.data_dir, "node-1", EngineSettings())
        self.publisher = EmbeddedPublisher(self.engine, self.config, self.spec, self.placement)

    def close(self) -> None:
        self.publisher.close()
        self.engine.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[_Node]:
    n = _Node(tmp_path)
    yield n
    n.close()


@pytest.fixture
def reader(node: _Node) -> Iterator[EmbeddedReader]:
    r = EmbeddedReader(node.data_dir)
    yield r
    r.close()


def _as_node(node: _Node, key: bytes) -> tuple[bytes, Version, int] | None:
    item = node.engine.get_item(key)
    return None if item is None else (item.value, item.version, item.expires_at_ms)


def _as_reader(entry: Entry | None) -> tuple[bytes, Version, int] | None:
    return None if entry is None else (entry.value, entry.version, entry.expires_at_ms)


def test_reader_matches_engine_over_random_writes_deletes_and_ttls(
    node: _Node, reader: EmbeddedReader
) -> None:
    rng = random.Random(14)
    keys = [f"k/{i:03d}".encode() for i in range(60)]
    for _round in range(6):
        for _ in range(80):
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.5:
                node.engine.put(key, rng.randbytes(rng.randint(0, 64)))
            elif roll < 0.7:
                node.engine.put(key, b"short-lived", ttl_ms=rng.choice([1, 5, 60_000]))
            else:
                node.engine.delete(key)
        time.sleep(0.02)  # the short TTLs run out first: both must read them as absent
        # Read-your-writes: no catch-up was requested, the read does it.
        for key in keys:
            assert _as_reader(reader.get(key)) == _as_node(node, key), key
        many = reader.get_many(keys)
        assert [_as_reader(e) for e in many] == [_as_node(node, k) for k in keys]
        scanned = list(reader.scan(b"k/", b"", b"", 7, False, None) or ())
        page = node.engine.scan_prefix(b"k/", limit=1000)
        assert [(e.key, e.value, tuple(e.version)) for e in scanned] == [
            (i.key, i.value, tuple(i.version)) for i in page.items
        ]
    assert all(e is None or e.staleness == FRESH for e in many)
    assert {e.served_by for e in many if e is not None} == {"node-1"}


def test_scan_limit_and_keys_only_follow_the_arguments(node: _Node, reader: EmbeddedReader) -> None:
    for i in range(30):
        node.engine.put(f"s/{i:02d}".encode(), b"v")
    node.engine.delete(b"s/05")
    got = list(reader.scan(b"s/", b"", b"", 4, True, 10) or ())
    assert [e.key for e in got] == [f"s/{i:02d}".encode() for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)]
    assert {e.value for e in got} == {b""}
    with pytest.raises(InvalidArgument, match="max_scan_limit"):
        reader.scan(b"s/", b"", b"", 1_000_000, False, None)


def test_bad_key_raises_the_nodes_invalid_argument(reader: EmbeddedReader) -> None:
    with pytest.raises(InvalidArgument, match="1024"):
        reader.get(b"x" * 1025)
    with pytest.raises(InvalidArgument, match="max_batch_ops"):
        reader.get_many([b"k"] * 1001)


def test_pinned_key_outside_the_region_is_never_read_from_the_files(tmp_path: Path) -> None:
    node = _Node(tmp_path, region="us", pinned=True)
    try:
        # A copy left behind by a rule change: the engine holds it, the reader must not serve it.
        node.engine.put(b"eu/left-behind", b"secret")
        node.engine.put(b"us/1", b"ok")
        with EmbeddedReader(node.data_dir) as reader:
            assert reader.region == "us"
            assert reader.get(b"eu/left-behind") is NETWORK
            assert reader.get_many([b"us/1", b"eu/left-behind"]) is NETWORK
            assert reader.scan(b"", b"", b"", 100, False, None) is None  # spans eu/
            assert reader.scan(b"eu/", b"", b"", 100, False, None) is None
            assert [e.key for e in reader.scan(b"us/", b"", b"", 100, False, None) or ()] == [
                b"us/1"
            ]
            assert reader.get(b"us/1") is not None
    finally:
        node.close()


def test_pinned_key_inside_the_region_is_served(tmp_path: Path) -> None:
    node = _Node(tmp_path, region="eu", pinned=True)
    try:
        node.engine.put(b"eu/1", b"here")
        with EmbeddedReader(node.data_dir) as reader:
            entry = reader.get(b"eu/1")
            assert entry is not NETWORK and entry is not None and entry.value == b"here"
            assert [e.key for e in reader.scan(b"", b"", b"", 10, False, None) or ()] == [b"eu/1"]
    finally:
        node.close()


def test_staleness_reported_until_caught_up(node: _Node) -> None:
    node.engine.put(b"a", b"1")
    with EmbeddedReader(node.data_dir, catch_up_on_read=False, background=False) as reader:
        assert reader.staleness() == FRESH
        node.engine.put(b"a", b"2")
        node.engine.put(b"b", b"3")
        lag = reader.staleness()
        # RocksDB sequence numbers: each write stores several keys (data, log, digests).
        assert lag.lag_seq >= 2 and lag.lag_ms >= 0.0
        entry = reader.get(b"a")
        assert entry is not None and entry.value == b"1"  # not caught up: the old value
        assert entry.staleness is not None and entry.staleness.lag_seq == lag.lag_seq
        reader.catch_up()
        assert reader.staleness() == FRESH
        entry = reader.get(b"a")
        assert entry is not None and entry.value == b"2" and entry.staleness == FRESH


def test_background_thread_catches_up_on_the_signal(node: _Node) -> None:
    # A 60 s interval: only the node's change signal can wake the thread in time.
    with EmbeddedReader(node.data_dir, catch_up_interval_s=60, catch_up_on_read=False) as reader:
        before = reader.catch_ups
        node.engine.put(b"t", b"1")
        deadline = time.monotonic() + 20
        while reader.staleness() != FRESH and time.monotonic() < deadline:
            time.sleep(0.001)
        assert reader.catch_ups > before
        entry = reader.get(b"t")
        assert entry is not None and entry.value == b"1" and entry.staleness == FRESH


def test_survives_compaction_and_restart_with_changed_rules(tmp_path: Path) -> None:
    node = _Node(tmp_path)
    reader = EmbeddedReader(node.data_dir)
    try:
        for i in range(2000):
            node.engine.put(f"c/{i:04d}".encode(), b"x" * 100)
        for i in range(0, 2000, 2):
            node.engine.delete(f"c/{i:04d}".encode())
        data = node.engine.column_families()[0]
        data.flush()
        data.compact_range(None, None)  # the files the reader opened are deleted now
        node.engine.put(b"c/after", b"y")
        assert [e.key for e in reader.scan(b"c/", b"", b"", 100, False, 3) or ()] == [
            b"c/0001",
            b"c/0003",
            b"c/0005",
        ]
        entry = reader.get(b"c/1999")
        assert entry is not None and entry.value == b"x" * 100
        epoch = read_manifest(node.data_dir).epoch
        node.close()
        entry = reader.get(b"c/after")  # the node is down: its files still answer
        assert entry is not None and entry.value == b"y"
        # Restart with a rule that pins c/ elsewhere: the reader follows the new manifest.
        manifest = read_manifest(node.data_dir)
        node.open()
        write_manifest(
            node.data_dir,
            dataclasses.replace(manifest, placement=((b"c/", ("eu",)),), epoch=epoch + 1),
        )
        node.publisher._writer._epoch = epoch + 1  # as a restart with the new rules does
        node.engine.put(b"d/1", b"new")
        assert reader.get(b"c/after") is NETWORK
        entry = reader.get(b"d/1")
        assert entry is not None and entry.value == b"new"
    finally:
        reader.close()
        node.close()


def test_open_embedded_falls_back_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    missing = tmp_path / "missing"
    reader, why = open_embedded(missing)
    assert reader is None and why is not None and "not a readable directory" in why
    assert str(missing) in caplog.text and "over the network" in caplog.text

    empty = tmp_path / "empty"
    empty.mkdir()
    reader, why = open_embedded(empty)
    assert reader is None and why is not None and MANIFEST_NAME in why

    assert open_embedded(None) == (None, None)


def test_open_embedded_refuses_a_manifest_of_another_node(node: _Node, tmp_path: Path) -> None:
    manifest = read_manifest(node.data_dir)
    write_manifest(node.data_dir, dataclasses.replace(manifest, node_id="node-9"))
    with pytest.raises(FailedPrecondition, match="node-9"):
        EmbeddedReader(node.data_dir)


def test_client_with_an_unusable_directory_reads_over_the_network(tmp_path: Path) -> None:
    with edgekv.Client("127.0.0.1:1", discover=False, embedded=tmp_path / "nope") as client:
        assert client.embedded is False
        assert client.embedded_error is not None and "nope" in client.embedded_error
        assert client.embedded_staleness() is None


def test_client_turned_on_by_the_environment_hint(
    node: _Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.engine.put(b"h", b"hint")
    monkeypatch.setenv("EDGEKV_EMBEDDED_DIR", str(node.data_dir))
    with edgekv.Client("127.0.0.1:1", discover=False) as client:  # no node listens there
        assert client.embedded is True and client.embedded_error is None
        entry = client.get("h")
        assert entry is not None and entry.value == b"hint" and entry.staleness == FRESH
        assert client.embedded_staleness() == FRESH
        assert [e.key for e in client.scan("h")] == [b"h"]


def test_async_client_reads_in_process_too(node: _Node) -> None:
    node.engine.put(b"as/1", b"one")
    node.engine.put(b"as/2", b"two", ttl_ms=60_000)

    async def scenario() -> None:
        async with edgekv.AsyncClient(
            "127.0.0.1:1", discover=False, embedded=node.data_dir
        ) as client:  # no node listens there: every answer comes from the files
            entry = await client.get("as/1")
            assert entry is not None and entry.value == b"one" and entry.staleness == FRESH
            many = await client.get_many(["as/1", "as/2", "as/3"])
            assert [e.value if e else None for e in many] == [b"one", b"two", None]
            assert [e.key async for e in client.scan("as/")] == [b"as/1", b"as/2"]

    asyncio.run(scenario())


def test_reader_changes_nothing_in_the_data_dir_but_rocksdicts_config(node: _Node) -> None:
    node.engine.put(b"w", b"1")
    node.engine.flush()

    def snapshot() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in node.data_dir.iterdir() if p.is_file()}

    before = snapshot()
    with EmbeddedReader(node.data_dir) as reader:
        reader.catch_up()
        assert reader.get(b"w") is not None
    after = snapshot()
    assert set(after) == set(before)  # no file of the reader's own (LOG, scratch) in there
    # rocksdict rewrites its config on open: with the same bytes, so the node is unaffected.
    assert {k for k in before if before[k] != after[k]} == set()


def test_reader_follows_a_restored_data_dir(node: _Node, tmp_path: Path) -> None:
    node.engine.put(b"r", b"before")
    with EmbeddedReader(node.data_dir) as reader:
        assert _value(reader.get(b"r")) == b"before"
        node.close()
        # As a restore does: the directory is replaced by a copy (new files, new inodes).
        aside = tmp_path / "aside"
        node.data_dir.rename(aside)
        shutil.copytree(aside, node.data_dir)
        shutil.rmtree(aside)
        node.open()
        node.engine.put(b"r", b"after")
        reader.catch_up()  # what the thread does within catch_up_interval_s
        assert reader._signal.inode == (node.data_dir / "EDGEKV-SIGNAL").stat().st_ino
        assert _value(reader.get(b"r")) == b"after"
        node.engine.put(b"r", b"again")
        assert _value(reader.get(b"r")) == b"again"  # and read-your-writes again


def _value(entry: object) -> bytes | None:
    assert entry is not NETWORK
    return None if entry is None else entry.value  # type: ignore[attr-defined]
