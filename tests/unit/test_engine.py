"""edgekv.storage.engine on a real RocksDB in tmp_path.

Time is controlled where it matters: the ``wall`` fixture replaces the wall
clock that edgekv.storage.clock reads (so the hybrid clock and TTL expiry times
follow it), and reads pass ``now_ms`` instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clockfake import FakeTime

from edgekv import native
from edgekv.errors import (
    CorruptRecord,
    EdgeKVError,
    FailedPrecondition,
    InvalidArgument,
    StorageError,
)
from edgekv.keyrange import prefix_end
from edgekv.limits import DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES, Limits
from edgekv.storage.batch import MAX_TTL_MS
from edgekv.storage.clock import LOGICAL_BITS, ClockSkewError, physical_ms
from edgekv.storage.engine import DeleteOp, Engine, EngineSettings, PutOp, ScanItem
from edgekv.storage.record import Item, Version

MiB = 1024 * 1024


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def open_engine(path: Path, node_id: str = "node-a", **options: Any) -> Engine:
    return Engine(path, node_id, EngineSettings(**options))


def remote(
    timestamp: int, origin: str = "node-b", value: bytes = b"v", *, tombstone: bool = False
) -> bytes:
    """A record another node wrote."""
    return native.encode_record(
        tombstone, timestamp, 0, origin.encode(), b"" if tombstone else value
    )


def hlc(ms: int, logical: int = 0) -> int:
    return (ms << LOGICAL_BITS) | logical


def now_hlc() -> int:
    return hlc(time.time_ns() // 1_000_000)


def state(eng: Engine) -> tuple[Any, ...]:
    """Everything a write may change: seq, clock, data, log and digests."""
    data, log, _ = eng.column_families()
    return (
        eng.last_seq,
        eng.clock.last,
        list(data.items()),
        list(log.items()),
        eng.digests.segment_digests(b""),
    )


def decoded(raw: bytes | None) -> tuple[bool, int, int, str, bytes] | None:
    return None if raw is None else native.decode_record(raw)


# -- put / get ---------------------------------------------------------------


def test_put_then_get_returns_value_and_version(engine: Engine) -> None:
    version = engine.put(b"k", b"value")
    assert isinstance(version, Version) and version.origin == "node-a"
    assert engine.get(b"k") == (b"value", version.timestamp, "node-a", 0)


def test_get_missing_key_returns_none(engine: Engine) -> None:
    assert engine.get(b"missing") is None
    assert engine.get_item(b"missing") is None
    assert engine.get_record(b"missing") is None


def test_get_item_returns_typed_item(engine: Engine) -> None:
    version = engine.put(b"k", b"v")
    item = engine.get_item(b"k")
    assert item == Item(b"v", version.timestamp, "node-a", 0)
    assert item is not None and item.version == version


def test_put_overwrites_with_newer_version(engine: Engine) -> None:
    first = engine.put(b"k", b"one")
    second = engine.put(b"k", b"two")
    assert second.timestamp > first.timestamp
    assert engine.get(b"k") == (b"two", second.timestamp, "node-a", 0)


def test_put_empty_value_stored(engine: Engine) -> None:
    engine.put(b"k", b"")
    assert engine.get(b"k")[0] == b""  # type: ignore[index]


def test_put_versions_strictly_increase(engine: Engine) -> None:
    stamps = [engine.put(b"k%d" % (i % 7), b"v").timestamp for i in range(300)]
    assert stamps == sorted(set(stamps))


def test_get_many_returns_items_in_order(engine: Engine) -> None:
    va = engine.put(b"a", b"1")
    engine.put(b"gone", b"x")
    engine.delete(b"gone")
    keys = [b"a", b"missing", b"gone", b"a"]
    a = (b"1", va.timestamp, "node-a", 0)
    assert engine.get_many(keys) == [a, None, None, a]
    assert engine.get_many(tuple(keys)) == [a, None, None, a]  # any sequence
    assert engine.get_many([]) == []


def test_get_many_over_max_batch_ops_rejected(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db", limits=Limits(max_batch_ops=3))
    try:
        assert eng.get_many([b"a", b"b", b"c"]) == [None] * 3
        with pytest.raises(InvalidArgument, match=r"4 keys; the limit is 3 \(max_batch_ops\)"):
            eng.get_many([b"a", b"b", b"c", b"d"])
    finally:
        eng.close()


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda e: e.get(b""), InvalidArgument),
        (lambda e: e.get(b"k" * (MAX_KEY_BYTES + 1)), InvalidArgument),
        (lambda e: e.get("k"), TypeError),
        (lambda e: e.get_many([b"k", b""]), InvalidArgument),
        (lambda e: e.get_many([b"k", "k"]), InvalidArgument),
    ],
    ids=["get-empty", "get-long", "get-str", "many-empty", "many-str"],
)
def test_get_invalid_key_rejected(engine: Engine, call: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call(engine)


# -- TTL -----------------------------------------------------------------------


def test_put_with_ttl_sets_absolute_expiry(engine: Engine, wall: FakeTime) -> None:
    version = engine.put(b"t", b"v", ttl_ms=5_000)
    assert engine.get(b"t", wall.ms) == (b"v", version.timestamp, "node-a", wall.ms + 5_000)


def test_get_with_ttl_expired_returns_none(engine: Engine, wall: FakeTime) -> None:
    engine.put(b"t", b"v", ttl_ms=1_000)
    expires_at_ms = wall.ms + 1_000
    assert engine.get(b"t", expires_at_ms - 1) is not None
    assert engine.get(b"t", expires_at_ms) is None  # expiry is exclusive
    assert engine.scan(now_ms=expires_at_ms - 1).items[0].expires_at_ms == expires_at_ms
    assert engine.scan(now_ms=expires_at_ms).items == []
    # The record stays (it is a version for last-writer-wins) until overwritten.
    assert decoded(engine.get_record(b"t"))[2] == expires_at_ms  # type: ignore[index]


def test_get_with_ttl_expired_by_real_clock_returns_none(engine: Engine, wall: FakeTime) -> None:
    wall.ms -= 60_000  # written a minute "ago", with a 1 s TTL: expired by now
    engine.put(b"t", b"v", ttl_ms=1_000)
    engine.put(b"keep", b"v", ttl_ms=3_600_000)
    assert engine.get(b"t") is None
    assert engine.get_many([b"t", b"keep"])[0] is None
    assert [i.key for i in engine.scan().items] == [b"keep"]


def test_put_zero_ttl_never_expires(engine: Engine) -> None:
    engine.put(b"k", b"v", ttl_ms=0)
    assert engine.get(b"k", 2**62) is not None
    assert engine.get(b"k", 2**62)[3] == 0  # type: ignore[index]


def test_put_longest_ttl_accepted(engine: Engine, wall: FakeTime) -> None:
    engine.put(b"k", b"v", ttl_ms=MAX_TTL_MS)
    assert engine.get(b"k", wall.ms)[3] == wall.ms + MAX_TTL_MS  # type: ignore[index]


# -- delete / tombstones -------------------------------------------------------


def test_delete_hides_value(engine: Engine) -> None:
    engine.put(b"k", b"v")
    version = engine.delete(b"k")
    assert engine.get(b"k") is None
    assert engine.get_many([b"k"]) == [None]
    assert engine.scan().items == []
    assert decoded(engine.get_record(b"k")) == (True, version.timestamp, 0, "node-a", b"")


def test_delete_missing_key_writes_tombstone(engine: Engine) -> None:
    version = engine.delete(b"never")
    assert decoded(engine.get_record(b"never")) == (True, version.timestamp, 0, "node-a", b"")
    assert [e.key for e in engine.read_log(1)] == [b"never"]


def test_put_after_delete_revives_key(engine: Engine) -> None:
    engine.put(b"k", b"1")
    engine.delete(b"k")
    version = engine.put(b"k", b"2")
    assert engine.get(b"k") == (b"2", version.timestamp, "node-a", 0)


def test_tombstone_survives_reopen(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.put(b"k", b"v")
    deleted = eng.delete(b"k")
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.get(b"k") is None
        assert decoded(eng.get_record(b"k")) == (True, deleted.timestamp, 0, "node-a", b"")
        # A replayed older write still loses to the tombstone after the restart.
        assert not eng.apply(b"k", remote(deleted.timestamp - 1, "node-z", b"stale"))
        assert eng.get(b"k") is None
    finally:
        eng.close()


# -- write batches -------------------------------------------------------------


def test_write_batch_shares_one_version(engine: Engine, wall: FakeTime) -> None:
    engine.put(b"old", b"x")
    version = engine.write([PutOp(b"a", b"1"), PutOp(b"b", b"2", 60_000), DeleteOp(b"old")])
    assert engine.get(b"a") == (b"1", version.timestamp, "node-a", 0)
    assert engine.get(b"b", wall.ms) == (b"2", version.timestamp, "node-a", wall.ms + 60_000)
    assert engine.get(b"old") is None
    assert decoded(engine.get_record(b"old"))[1] == version.timestamp  # type: ignore[index]
    assert engine.last_seq == 4


FAILING_BATCHES = [
    ([PutOp(b"a", b"1"), PutOp(b"", b"2")], "key is empty"),
    ([PutOp(b"a", b"1"), PutOp(b"k" * 1025, b"2")], "key is 1025 bytes; the limit is 1024"),
    ([PutOp(b"a", b"1"), DeleteOp(b"")], "key is empty"),
    ([PutOp(b"a", b"1"), PutOp("b", b"2")], "key must be bytes"),  # type: ignore[arg-type]
    ([PutOp(b"a", b"1"), PutOp(b"b", b"x" * (MiB + 1))],
     r"value is 1048577 bytes; the limit is 1048576 \(max_value_bytes\)"),
    ([PutOp(b"a", b"1"), PutOp(b"b", "text")], "value must be bytes"),  # type: ignore[arg-type]
    ([PutOp(b"a", b"1"), PutOp(b"a", b"2")], "appears twice"),
    ([PutOp(b"a", b"1"), DeleteOp(b"a")], "appears twice"),
    ([PutOp(b"a", b"1"), PutOp(b"b", b"2", -1)], r"ops\[1\].ttl_ms is -1"),
    ([PutOp(b"a", b"1"), PutOp(b"b", b"2", MAX_TTL_MS + 1)], r"ops\[1\].ttl_ms is"),
    ([PutOp(b"a", b"1"), PutOp(b"b", b"2", True)], r"ops\[1\].ttl_ms must be an integer"),
    ([PutOp(b"a", b"1"), PutOp(b"b", b"2", 1.5)], r"ops\[1\].ttl_ms must be an integer"),  # type: ignore[arg-type]
    ([], "batch is empty"),
    ([PutOp(b"k%d" % i, b"v") for i in range(1001)],
     r"1001 operations; the limit is 1000 \(max_batch_ops\)"),
]  # fmt: skip


@pytest.mark.parametrize(("ops", "message"), FAILING_BATCHES)
def test_write_failing_batch_writes_nothing(
    engine: Engine, ops: list[PutOp | DeleteOp], message: str
) -> None:
    engine.put(b"before", b"x")
    before = state(engine)
    with pytest.raises(InvalidArgument, match=message):
        engine.write(ops)
    assert state(engine) == before
    assert engine.get(b"a") is None


def test_write_non_op_rejected_as_invalid_argument(engine: Engine) -> None:
    before = state(engine)
    with pytest.raises(InvalidArgument, match="expected PutOp or DeleteOp"):
        engine.write([PutOp(b"a", b"1"), (b"b", b"2")])  # type: ignore[list-item]
    assert state(engine) == before


def test_write_group_isolates_bad_batches(engine: Engine) -> None:
    results = engine.write_group([[PutOp(b"g1", b"1")], [PutOp(b"", b"x")], [DeleteOp(b"g1")]])
    assert isinstance(results[0], Version) and isinstance(results[2], Version)
    assert isinstance(results[1], InvalidArgument)
    assert results[2].timestamp > results[0].timestamp
    assert engine.get(b"g1") is None and engine.last_seq == 2


# -- limits --------------------------------------------------------------------


def test_put_key_at_limits_accepted(engine: Engine) -> None:
    engine.put(b"k", b"v")
    engine.put(b"k" * MAX_KEY_BYTES, b"v")
    assert engine.get(b"k" * MAX_KEY_BYTES) is not None


def test_put_value_at_default_limit_accepted(engine: Engine) -> None:
    engine.put(b"big", b"x" * DEFAULT_MAX_VALUE_BYTES)
    assert len(engine.get(b"big")[0]) == MiB  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"", b"v", "key is empty; keys are 1 to 1024 bytes"),
        (b"k" * 1025, b"v", "key is 1025 bytes; the limit is 1024"),
        (b"k", b"x" * (MiB + 1),
         r"value is 1048577 bytes; the limit is 1048576 \(max_value_bytes\)"),
    ],
    ids=["empty-key", "long-key", "big-value"],
)  # fmt: skip
def test_put_over_limit_rejected_names_limit(
    engine: Engine, key: bytes, value: bytes, message: str
) -> None:
    before = state(engine)
    with pytest.raises(InvalidArgument, match=message):
        engine.put(key, value)
    assert state(engine) == before


def test_configured_value_limit_enforced(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db", limits=Limits(max_value_bytes=10))
    try:
        eng.put(b"k", b"x" * 10)
        before = state(eng)
        with pytest.raises(
            InvalidArgument, match=r"value is 11 bytes; the limit is 10 \(max_value_bytes\)"
        ):
            eng.put(b"k", b"x" * 11)
        assert state(eng) == before
        assert eng.get(b"k")[0] == b"x" * 10  # type: ignore[index]
    finally:
        eng.close()


def test_configured_batch_limit_enforced(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db", limits=Limits(max_batch_ops=2))
    try:
        eng.write([PutOp(b"a", b"1"), PutOp(b"b", b"2")])
        with pytest.raises(InvalidArgument, match=r"the limit is 2 \(max_batch_ops\)"):
            eng.write([PutOp(b"c", b"1"), PutOp(b"d", b"2"), PutOp(b"e", b"3")])
        assert eng.get(b"c") is None and eng.last_seq == 2
    finally:
        eng.close()


# -- scan ----------------------------------------------------------------------


def test_scan_returns_live_items_in_key_order(engine: Engine) -> None:
    versions = {k: engine.put(k, b"v-" + k) for k in [b"b", b"a", b"c"]}
    page = engine.scan()
    assert page.next_start is None
    assert page.items == [
        ScanItem(k, b"v-" + k, versions[k].timestamp, "node-a", 0) for k in [b"a", b"b", b"c"]
    ]
    assert page.items[0].version == versions[b"a"]


def test_scan_range_is_half_open(engine: Engine) -> None:
    engine.write([PutOp(k, b"v") for k in [b"a", b"b", b"c", b"d"]])
    assert [i.key for i in engine.scan(b"b", b"d").items] == [b"b", b"c"]
    assert [i.key for i in engine.scan(b"bb").items] == [b"c", b"d"]
    assert [i.key for i in engine.scan(b"", b"b").items] == [b"a"]


def test_scan_prefix_returns_only_prefix(engine: Engine) -> None:
    keys = [b"p", b"p/", b"p/1", b"p/\xff", b"p0", b"q", b"\xff", b"\xff\x00", b"\xff\xff"]
    engine.write([PutOp(k, b"v") for k in keys])
    assert [i.key for i in engine.scan_prefix(b"p/").items] == [b"p/", b"p/1", b"p/\xff"]
    assert [i.key for i in engine.scan_prefix(b"p").items] == [b"p", b"p/", b"p/1", b"p/\xff",
                                                              b"p0"]  # fmt: skip
    assert [i.key for i in engine.scan_prefix(b"\xff").items] == [b"\xff", b"\xff\x00",
                                                                 b"\xff\xff"]  # fmt: skip
    assert len(engine.scan_prefix(b"").items) == len(keys)


def test_scan_prefix_resumes_at_start(engine: Engine) -> None:
    engine.write([PutOp(b"p/%d" % i, b"v") for i in range(5)])
    page = engine.scan_prefix(b"p/", limit=2, start=b"p/2")
    assert [i.key for i in page.items] == [b"p/2", b"p/3"]
    assert page.next_start is not None
    page = engine.scan_prefix(b"p/", limit=2, start=page.next_start)
    assert [i.key for i in page.items] == [b"p/4"] and page.next_start is None
    assert engine.scan_prefix(b"p/", start=b"a").items[0].key == b"p/0"


def test_scan_pages_resume_across_tombstones_and_expired(engine: Engine, wall: FakeTime) -> None:
    engine.write([PutOp(b"p/%02d" % i, b"%d" % i) for i in range(30)])
    engine.write([DeleteOp(b"p/%02d" % i) for i in range(5, 15)])
    engine.write([PutOp(b"p/%02d" % i, b"ttl", 1_000) for i in range(15, 25)])
    engine.put(b"q/0", b"x")
    seen: list[bytes] = []
    start = b"p/"
    for _ in range(30):
        page = engine.scan(start, prefix_end(b"p/"), limit=3, now_ms=wall.ms + 1_000)
        assert len(page.items) <= 3
        seen += [i.key for i in page.items]
        if page.next_start is None:
            break
        start = page.next_start
    assert seen == [b"p/%02d" % i for i in [*range(5), *range(25, 30)]]


def test_scan_page_of_only_tombstones_returns_next_start(engine: Engine) -> None:
    # A page examines at most limit * 8 + 1024 records, so a long run of
    # tombstones yields empty pages that still say where to resume.
    for start in range(0, 2000, 1000):
        engine.write([PutOp(b"t%04d" % i, b"v") for i in range(start, start + 1000)])
        engine.write([DeleteOp(b"t%04d" % i) for i in range(start, start + 1000)])
    engine.put(b"z", b"live")
    page = engine.scan(limit=1)
    assert page.items == [] and page.next_start is not None
    pages = 1
    while page.next_start is not None:
        page = engine.scan(page.next_start, limit=1)
        pages += 1
    assert [i.key for i in page.items] == [b"z"] and pages >= 2


def test_scan_end_of_range_next_start_none(engine: Engine) -> None:
    engine.write([PutOp(b"a%d" % i, b"v") for i in range(3)])
    page = engine.scan(limit=3)
    assert len(page.items) == 3 and page.next_start is None
    page = engine.scan(limit=2)
    assert page.next_start is not None
    assert engine.scan(page.next_start, limit=2).next_start is None


def test_scan_limit_bounds_enforced(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db", limits=Limits(max_scan_limit=5))
    try:
        eng.write([PutOp(b"k%d" % i, b"v") for i in range(8)])
        assert len(eng.scan(limit=5).items) == 5
        for limit in (0, -1, 6):
            message = rf"scan limit is {limit}; it must be 1 to 5 \(max_scan_limit\)"
            with pytest.raises(InvalidArgument, match=message):
                eng.scan(limit=limit)
    finally:
        eng.close()


def test_scan_default_max_scan_limit(engine: Engine) -> None:
    engine.scan(limit=10_000)
    with pytest.raises(InvalidArgument, match="max_scan_limit"):
        engine.scan(limit=10_001)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"b", b"a"), "scan range is empty"),
        ((b"a", b"a"), "scan range is empty"),
        (("a", b""), "must be bytes"),
        ((b"", None), "must be bytes"),
    ],
)
def test_scan_bad_range_rejected(engine: Engine, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        engine.scan(*args)


# -- apply (remote writes) -----------------------------------------------------


def test_apply_newer_record_wins(engine: Engine) -> None:
    local = engine.put(b"k", b"local")
    assert engine.apply(b"k", remote(local.timestamp + 1, "node-b", b"remote"))
    assert engine.get(b"k") == (b"remote", local.timestamp + 1, "node-b", 0)


def test_apply_older_record_loses(engine: Engine) -> None:
    local = engine.put(b"k", b"local")
    assert not engine.apply(b"k", remote(local.timestamp - 1, "node-z", b"old"))
    assert engine.get(b"k") == (b"local", local.timestamp, "node-a", 0)


def test_apply_equal_version_is_noop_returning_false(engine: Engine) -> None:
    ts = now_hlc()
    first = remote(ts, "node-b", b"first")
    assert engine.apply(b"k", first)
    before = state(engine)
    assert not engine.apply(b"k", first)
    # Same version, other bytes: still the same write as far as LWW knows.
    assert not engine.apply(b"k", remote(ts, "node-b", b"other"))
    assert state(engine) == before
    assert engine.get_record(b"k") == first


def test_apply_same_timestamp_greater_origin_wins(engine: Engine) -> None:
    ts = now_hlc()
    assert engine.apply(b"k", remote(ts, "node-b", b"b"))
    assert engine.apply(b"k", remote(ts, "node-c", b"c"))
    assert not engine.apply(b"k", remote(ts, "node-a", b"a"))
    assert engine.get(b"k")[0] == b"c"  # type: ignore[index]


def test_apply_tombstone_over_value_hides_it(engine: Engine) -> None:
    local = engine.put(b"k", b"v")
    assert engine.apply(b"k", remote(local.timestamp + 1, tombstone=True))
    assert engine.get(b"k") is None
    assert decoded(engine.get_record(b"k"))[0] is True  # type: ignore[index]


def test_apply_value_over_newer_tombstone_loses(engine: Engine) -> None:
    deleted = engine.delete(b"k")
    assert not engine.apply(b"k", remote(deleted.timestamp - 1, value=b"zombie"))
    assert engine.get(b"k") is None
    assert engine.apply(b"k", remote(deleted.timestamp + 1, value=b"newer"))
    assert engine.get(b"k")[0] == b"newer"  # type: ignore[index]


def test_apply_advances_clock(engine: Engine, wall: FakeTime) -> None:
    ahead = hlc(wall.ms + 300, 7)  # within the default 500 ms skew
    assert engine.apply(b"k", remote(ahead))
    assert engine.clock.last == ahead
    assert engine.put(b"mine", b"v").timestamp > ahead


def test_apply_losing_record_still_advances_clock(engine: Engine, wall: FakeTime) -> None:
    engine.apply(b"k", remote(hlc(wall.ms + 200), "node-c"))
    assert not engine.apply(b"k", remote(hlc(wall.ms + 200), "node-b"))
    assert engine.put(b"mine", b"v").timestamp > hlc(wall.ms + 200)


def test_apply_at_max_clock_skew_accepted(engine: Engine, wall: FakeTime) -> None:
    edge = hlc(wall.ms + engine.settings.max_clock_skew_ms, 0xFFFF)
    assert engine.apply(b"k", remote(edge))
    assert engine.clock.last == edge


def test_apply_beyond_max_clock_skew_raises_and_writes_nothing(
    engine: Engine, wall: FakeTime
) -> None:
    engine.put(b"existing", b"v")
    before = state(engine)
    too_far = hlc(wall.ms + engine.settings.max_clock_skew_ms + 1)
    with pytest.raises(ClockSkewError, match=r"501 ms ahead.*500 \(max_clock_skew_ms\)"):
        engine.apply_many([(b"ok", remote(hlc(wall.ms))), (b"far", remote(too_far))])
    assert state(engine) == before
    assert engine.get(b"ok") is None and engine.get(b"far") is None
    assert engine.clock.rejected_count == 1
    assert isinstance(ClockSkewError("x"), FailedPrecondition)


def test_apply_configured_max_clock_skew_enforced(tmp_path: Path, wall: FakeTime) -> None:
    eng = open_engine(tmp_path / "db", max_clock_skew_ms=10_000)
    try:
        assert eng.apply(b"k", remote(hlc(wall.ms + 10_000)))
        with pytest.raises(ClockSkewError, match="10000 \\(max_clock_skew_ms\\)"):
            eng.apply(b"k", remote(hlc(wall.ms + 10_001)))
    finally:
        eng.close()


def test_apply_does_not_append_to_log(engine: Engine) -> None:
    engine.put(b"local", b"v")
    engine.apply(b"k", remote(now_hlc()))
    assert engine.last_seq == 1
    assert [e.key for e in engine.read_log(0)] == [b"local"]


def test_apply_many_returns_changed_count(engine: Engine) -> None:
    ts = now_hlc()
    local = engine.put(b"mine", b"v")
    changed = engine.apply_many(
        [
            (b"a", remote(ts + 1)),
            (b"b", remote(ts + 2)),
            (b"mine", remote(local.timestamp - 1)),  # loses
            (b"a", remote(ts + 1)),  # repeat in the batch
        ]
    )
    assert changed == 2
    assert engine.apply_many([]) == 0


def test_apply_many_keeps_greatest_within_batch(engine: Engine) -> None:
    ts = now_hlc()
    changed = engine.apply_many(
        [(b"k", remote(ts + 2, value=b"2")), (b"k", remote(ts + 1, value=b"1")),
         (b"k", remote(ts + 3, value=b"3")), (b"k", remote(ts, value=b"0"))]
    )  # fmt: skip
    assert changed == 1 and engine.get(b"k")[0] == b"3"  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "raw", "exc"),
    [
        (b"k", b"\x07garbage", CorruptRecord),
        (b"k", b"", CorruptRecord),
        (b"", remote(1), InvalidArgument),
        (b"k" * 1025, remote(1), InvalidArgument),
        ("k", remote(1), InvalidArgument),
        (b"k", "not bytes", TypeError),
    ],
    ids=["junk", "empty-record", "empty-key", "long-key", "str-key", "str-record"],
)
def test_apply_invalid_entry_writes_nothing(
    engine: Engine, key: Any, raw: Any, exc: type[Exception]
) -> None:
    engine.put(b"existing", b"v")
    before = state(engine)
    with pytest.raises(exc):
        engine.apply_many([(b"good", remote(now_hlc())), (key, raw)])
    assert state(engine) == before


def test_apply_non_ascii_origin_raises_corrupt_record(engine: Engine) -> None:
    raw = bytearray(native.encode_record(False, now_hlc(), 0, b"nx", b"v"))
    raw[raw.index(b"nx") + 1] = 0xE9  # encode_record refuses a non-ASCII origin itself
    with pytest.raises(CorruptRecord, match="not ASCII"):
        engine.apply(b"k", bytes(raw))


def test_apply_clock_survives_reopen(tmp_path: Path, wall: FakeTime) -> None:
    eng = open_engine(tmp_path / "db")
    ahead = hlc(wall.ms + 400, 3)
    eng.apply(b"k", remote(ahead))
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.clock.last >= ahead
        assert eng.put(b"mine", b"v").timestamp > ahead
    finally:
        eng.close()


# -- reopening -----------------------------------------------------------------


def test_reopen_keeps_seq_clock_and_data(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.put(b"a", b"1", ttl_ms=3_600_000)
    last = eng.write([PutOp(b"b", b"2"), DeleteOp(b"c")])
    data = eng.get_many([b"a", b"b", b"c"])
    high, seq = eng.clock.last, eng.last_seq
    eng.close()
    eng = open_engine(tmp_path / "db")
    try:
        assert eng.last_seq == seq == 3
        assert eng.clock.last >= high >= last.timestamp
        assert eng.get_many([b"a", b"b", b"c"]) == data
        assert eng.put(b"d", b"v").timestamp > high
        assert eng.read_log(4)[0].seq == 4
    finally:
        eng.close()


def test_reopen_with_wall_clock_stepped_back_keeps_timestamps_increasing(
    tmp_path: Path, wall: FakeTime
) -> None:
    eng = open_engine(tmp_path / "db")
    before = eng.put(b"k", b"1")
    eng.close()
    wall.ms -= 3_600_000  # NTP stepped the clock back an hour during the restart
    eng = open_engine(tmp_path / "db")
    try:
        after = [eng.put(b"k", b"%d" % i) for i in range(3)]
        stamps = [before.timestamp, *(v.timestamp for v in after)]
        assert stamps == sorted(set(stamps))
        assert eng.get(b"k")[0] == b"2"  # type: ignore[index]
        # Counting logically on top of the persisted high-water mark.
        assert physical_ms(after[-1].timestamp) == physical_ms(before.timestamp)
    finally:
        eng.close()


def test_put_with_wall_clock_stalled_or_stepping_back_increases(
    engine: Engine, wall: FakeTime
) -> None:
    stamps = []
    for step in [0, 0, -5_000, 0, 10, -1, 0]:
        wall.ms += step
        stamps.append(engine.put(b"k", b"v").timestamp)
    assert stamps == sorted(set(stamps))


def test_open_data_dir_of_another_node_raises_failed_precondition(tmp_path: Path) -> None:
    open_engine(tmp_path / "db", "node-a").close()
    with pytest.raises(FailedPrecondition, match="belongs to node 'node-a', not 'node-b'"):
        open_engine(tmp_path / "db", "node-b")
    open_engine(tmp_path / "db", "node-a").close()  # the refusal left it usable


def test_open_locked_data_dir_raises_storage_error(engine: Engine) -> None:
    with pytest.raises(StorageError, match="cannot open RocksDB"):
        Engine(engine.path, "node-a")


@pytest.mark.parametrize("node_id", ["", "n" * 256])
def test_open_bad_node_id_rejected(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(InvalidArgument, match="node id is"):
        open_engine(tmp_path / "db", node_id)


def test_open_non_ascii_node_id_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        open_engine(tmp_path / "db", "nöde")


def test_close_is_idempotent(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.put(b"k", b"v")
    eng.close()
    eng.close()
    eng = open_engine(tmp_path / "db")  # the lock was released
    eng.close()


def test_apply_after_close_raises_storage_error(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.close()
    with pytest.raises(StorageError, match="closed"):
        eng.apply(b"k", remote(now_hlc()))


def test_put_after_close_raises_storage_error(tmp_path: Path) -> None:
    eng = open_engine(tmp_path / "db")
    eng.close()
    with pytest.raises(StorageError, match="closed"):
        eng.put(b"k", b"v")


# -- corruption ----------------------------------------------------------------


def test_corrupt_stored_record_raises_corrupt_record_on_get(engine: Engine) -> None:
    data, _, _ = engine.column_families()
    engine.put(b"a", b"fine")
    data[b"bad"] = b"\x02" + b"not a record, just bytes"
    with pytest.raises(CorruptRecord, match="format version 2"):
        engine.get(b"bad")
    with pytest.raises(CorruptRecord):
        engine.get_many([b"a", b"bad"])
    with pytest.raises(CorruptRecord):
        engine.scan()
    with pytest.raises(CorruptRecord):
        engine.apply(b"bad", remote(now_hlc()))
    assert engine.get(b"a")[0] == b"fine"  # type: ignore[index]
    assert issubclass(CorruptRecord, StorageError) and issubclass(CorruptRecord, EdgeKVError)


# -- listeners ----------------------------------------------------


def test_listener_sees_local_and_applied_changes(engine: Engine) -> None:
    seen: list[tuple[list[bytes], int, bool]] = []
    engine.add_listener(
        lambda changes, seq, local: seen.append(([c.key for c in changes], seq, local))
    )
    engine.put(b"a", b"1")
    engine.apply(b"b", remote(now_hlc()))
    engine.apply(b"b", remote(1))  # loses: no change, no call
    assert seen == [([b"a"], 1, True), ([b"b"], 1, False)]


def test_listener_failure_does_not_fail_write(engine: Engine) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("consumer bug")

    engine.add_listener(broken)
    engine.put(b"k", b"v")
    assert engine.get(b"k") is not None
