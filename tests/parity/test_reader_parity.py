"""Reader.get / get_many / scan: both implementations return the live view of decode_record.

The oracle here states the Reader's contract in terms of ``impl.decode_record``
(whose parity test_record_parity.py establishes): a stored record reads as its
value and version unless it is a tombstone or its expiry (only when the expiry
flag is set) is at or before ``now_ms``. A dict stands in for RocksDB (rocksdict's
``get`` takes a key or a list of keys) and a sorted list for its iterator, which
is enough to test our decoder; one test runs over a real ``Rdict(raw_mode=True)``.
"""

from __future__ import annotations

import bisect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from edgekv import _fallback
from edgekv.errors import CorruptRecord, InvalidArgument
from edgekv.storage import record

NOW = 1_700_000_000_000
I64_MAX = 2**63 - 1


class ListGet:
    """A dict's get with rocksdict's calling convention: a key, or a list of keys."""

    def __init__(self, data: dict[bytes, Any]) -> None:
        self.data = data

    def __call__(self, key: bytes | list[bytes]) -> Any:
        if isinstance(key, list):
            return [self.data.get(k) for k in key]
        return self.data.get(key)


class SortedIter:
    """The part of RdictIter that Reader.scan uses, over a dict's sorted keys."""

    def __init__(self, data: dict[bytes, Any]) -> None:
        self.keys = sorted(data)
        self.data = data
        self.i = 0

    def seek(self, key: bytes) -> None:
        self.i = bisect.bisect_left(self.keys, key)

    def valid(self) -> bool:
        return self.i < len(self.keys)

    def key(self) -> bytes:
        return self.keys[self.i]

    def value(self) -> Any:
        return self.data[self.keys[self.i]]

    def next(self) -> None:
        self.i += 1


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """The result of ``fn(*args)``, or the class of the exception it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # parity compares the class, whatever it is
        return type(exc)


# -- the oracle ---------------------------------------------------------------


def expected_item(impl: ModuleType, raw: Any, now_ms: int) -> Any:
    """(value, timestamp, origin, expires_at_ms), None, or the exception class."""
    if type(raw) is not bytes:
        return CorruptRecord
    decoded = outcome(impl.decode_record, raw)
    if isinstance(decoded, type):
        return decoded
    tombstone, timestamp, expires_at_ms, origin, value = decoded
    if tombstone:
        return None
    if not raw[record.OFF_FLAGS] & record.FLAG_EXPIRES:
        return (value, timestamp, origin, 0)  # the field counts only with the flag
    return None if expires_at_ms <= now_ms else (value, timestamp, origin, expires_at_ms)


def expected_get_many(impl: ModuleType, data: dict[bytes, Any], keys: list[bytes], now: int) -> Any:
    out = []
    for key in keys:
        item = None if key not in data else expected_item(impl, data[key], now)
        if isinstance(item, type):
            return item
        out.append(item)
    return out


def expected_scan(
    impl: ModuleType,
    data: dict[bytes, Any],
    start: bytes,
    end: bytes,
    limit: int,
    max_examined: int,
    now: int,
) -> Any:
    """Live items in [start, end); stop before the limit-th+1 item or after
    max_examined records, returning the last key examined so the caller resumes."""
    items: list[tuple[Any, ...]] = []
    last = None
    for examined, key in enumerate(sorted(k for k in data if k >= start)):
        if end and key >= end:
            return items, None
        if len(items) >= limit or (max_examined and examined >= max_examined):
            return items, last
        item = expected_item(impl, data[key], now)
        if isinstance(item, type):
            return item
        if item is not None:
            items.append((key, *item))
        last = key
    return items, None


# -- inputs -------------------------------------------------------------------

short_origins = st.text(st.characters(max_codepoint=127), min_size=1, max_size=8).map(str.encode)
expiries = st.one_of(st.sampled_from([0, NOW - 1, NOW, NOW + 1]), st.integers(0, 2**64 - 1))


@st.composite
def stored_values(draw: st.DrawFn) -> Any:
    """Mostly valid records (live, tombstones, expiring around NOW), some junk."""
    kind = draw(st.sampled_from(["record"] * 8 + ["flag-only", "junk", "not-bytes"]))
    if kind == "junk":
        return draw(st.binary(max_size=30))
    if kind == "not-bytes":
        return bytearray(b"\x01")
    tombstone = draw(st.booleans())
    value = b"" if tombstone else draw(st.binary(max_size=10))
    expires_at_ms = draw(expiries)
    raw = _fallback.encode_record(
        tombstone, draw(st.integers(0, 2**64 - 1)), expires_at_ms, draw(short_origins), value
    )
    if kind == "flag-only":  # expiry flag flipped: set without a time, or a time without it
        raw = raw[:1] + bytes((raw[1] ^ record.FLAG_EXPIRES,)) + raw[2:]
    return raw


keys = st.binary(min_size=1, max_size=3)
stores = st.dictionaries(keys, stored_values(), max_size=12)
valid_stores = st.dictionaries(
    keys, stored_values().filter(lambda v: expected_item(_fallback, v, 0) is not CorruptRecord),
    max_size=16,
)  # fmt: skip
nows = st.one_of(st.sampled_from([NOW - 1, NOW, NOW + 1]), st.integers(0, I64_MAX))


# -- get / get_many -----------------------------------------------------------


@settings(max_examples=200)
@given(data=stores, extra=st.lists(keys, max_size=4), now=nows)
def test_get_matches_decoded_record(
    impl: ModuleType, data: dict[bytes, Any], extra: list[bytes], now: int
) -> None:
    reader = impl.Reader(ListGet(data))
    for key in [*data, *extra]:
        expected = None if key not in data else expected_item(impl, data[key], now)
        assert outcome(reader.get, key, now) == expected


@settings(max_examples=200)
@given(data=stores, extra=st.lists(keys, max_size=4), now=nows, seed=st.randoms())
def test_get_many_matches_decoded_records(
    impl: ModuleType, data: dict[bytes, Any], extra: list[bytes], now: int, seed: Any
) -> None:
    wanted = [*data, *extra, *data]  # repeats on purpose
    seed.shuffle(wanted)
    reader = impl.Reader(ListGet(data))
    assert outcome(reader.get_many, wanted, now) == expected_get_many(impl, data, wanted, now)


def test_get_expiry_boundary_is_exclusive(impl: ModuleType) -> None:
    raw = impl.encode_record(False, 7, NOW, b"n", b"v")
    reader = impl.Reader(ListGet({b"k": raw}))
    assert reader.get(b"k", NOW - 1) == (b"v", 7, "n", NOW)
    assert reader.get(b"k", NOW) is None
    assert reader.get_many([b"k"], NOW - 1) == [(b"v", 7, "n", NOW)]
    assert reader.get_many([b"k"], NOW) == [None]


def test_get_without_now_reads_the_wall_clock(impl: ModuleType) -> None:
    past, future = NOW - 10_000, 2**62
    data = {
        b"past": impl.encode_record(False, 1, past, b"n", b"old"),
        b"future": impl.encode_record(False, 1, future, b"n", b"new"),
    }
    reader = impl.Reader(ListGet(data))
    assert reader.get(b"past") is None
    assert reader.get(b"future") == (b"new", 1, "n", future)
    assert reader.get_many([b"past", b"future"]) == [None, (b"new", 1, "n", future)]
    items, _ = reader.scan(SortedIter(data), b"", b"", 10)
    assert [i[0] for i in items] == [b"future"]


def test_reader_constructed_by_keyword(impl: ModuleType) -> None:
    raw = impl.encode_record(False, 1, 0, b"n", b"v")
    assert impl.Reader(get=ListGet({b"k": raw})).get(key=b"k", now_ms=0) == (b"v", 1, "n", 0)


BytesSub = type("BytesSub", (bytes,), {})


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda r: r.get(b""), InvalidArgument),
        (lambda r: r.get(b"k" * 1025), InvalidArgument),
        (lambda r: r.get("k"), TypeError),
        (lambda r: r.get(None), TypeError),
        (lambda r: r.get(bytearray(b"k")), TypeError),
        (lambda r: r.get(BytesSub(b"k")), TypeError),
        (lambda r: r.get_many((b"k",)), TypeError),
        (lambda r: r.get_many(None), TypeError),
        (lambda r: r.get_many([b"k", "k"]), InvalidArgument),
        (lambda r: r.get_many([b"k", b""]), InvalidArgument),
        (lambda r: r.get_many([b"k" * 1025]), InvalidArgument),
        (lambda r: r.get(b"notbytes"), CorruptRecord),
        (lambda r: r.get_many([b"k", b"notbytes"]), CorruptRecord),
        (lambda r: r.get(b"junk"), CorruptRecord),
        (lambda r: r.get(b"k", "0"), TypeError),
        (lambda r: r.get(b"k", 2**63), OverflowError),
    ],
    ids=["empty", "1025-bytes", "str", "none", "bytearray", "bytes-subclass", "many-tuple",
         "many-none", "many-str-item", "many-empty-item", "many-long-item", "stored-not-bytes",
         "many-stored-not-bytes", "stored-junk", "now-str", "now-over-int64"],
)  # fmt: skip
def test_get_bad_input_raises_same_error(
    impl: ModuleType,
    call: Callable[[Any], Any],
    exc: type[Exception],
) -> None:
    data = {
        b"k": impl.encode_record(False, 1, 0, b"n", b"v"),
        b"notbytes": bytearray(impl.encode_record(False, 1, 0, b"n", b"v")),
        b"junk": b"\x09junk",
    }
    with pytest.raises(exc):
        call(impl.Reader(ListGet(data)))


def test_get_many_empty_list_returns_empty(impl: ModuleType) -> None:
    assert impl.Reader(ListGet({})).get_many([], NOW) == []


def test_get_longest_key_accepted(impl: ModuleType) -> None:
    raw = impl.encode_record(False, 1, 0, b"n", b"v")
    key = b"k" * 1024
    reader = impl.Reader(ListGet({key: raw}))
    assert reader.get(key, 0) == (b"v", 1, "n", 0)
    assert reader.get_many([key], 0) == [(b"v", 1, "n", 0)]


GETTER_SHORT_RESULT = """
import sys
from edgekv import {module} as impl
reader = impl.Reader(lambda keys: [] if isinstance(keys, list) else None)
try:
    result = reader.get_many([b"a", b"b"], 0)
except Exception as exc:
    print("raised", type(exc).__name__)
else:
    print("returned", result)
"""


def test_get_many_short_getter_result_raises(impl: ModuleType) -> None:
    # A subprocess: unchecked indexing past the list would crash the interpreter.
    proc = subprocess.run(
        [sys.executable, "-c", GETTER_SHORT_RESULT.format(module=impl.__name__.split(".")[1])],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter died with {proc.returncode}: {proc.stderr}"
    assert proc.stdout.startswith("raised"), proc.stdout


# -- scan -------------------------------------------------------------------


@settings(max_examples=300)
@given(
    data=stores,
    start=st.binary(max_size=2),
    end=st.binary(max_size=3),
    limit=st.integers(1, 20),
    max_examined=st.integers(0, 20),
    now=nows,
)
def test_scan_matches_decoded_records(
    impl: ModuleType,
    data: dict[bytes, Any],
    start: bytes,
    end: bytes,
    limit: int,
    max_examined: int,
    now: int,
) -> None:
    reader = impl.Reader(ListGet(data))
    got = outcome(reader.scan, SortedIter(data), start, end, limit, max_examined, now)
    assert got == expected_scan(impl, data, start, end, limit, max_examined, now)


@settings(max_examples=200)
@given(
    data=valid_stores,
    start=st.binary(max_size=2),
    end=st.binary(max_size=3),
    limit=st.integers(1, 5),
    max_examined=st.integers(0, 5),
    now=nows,
)
def test_scan_pages_cover_range_once(
    impl: ModuleType,
    data: dict[bytes, Any],
    start: bytes,
    end: bytes,
    limit: int,
    max_examined: int,
    now: int,
) -> None:
    reader = impl.Reader(ListGet(data))
    seen: list[tuple[Any, ...]] = []
    resume = start
    for _ in range(len(data) + 2):
        items, last = reader.scan(SortedIter(data), resume, end, limit, max_examined, now)
        assert len(items) <= limit
        seen += items
        if last is None:
            break
        resume = last + b"\x00"  # the successor of the last key examined
    else:
        raise AssertionError("paging did not finish")
    live = [
        (k, *item) for k in sorted(data)
        if k >= start and (not end or k < end)
        and (item := expected_item(impl, data[k], now)) is not None
    ]  # fmt: skip
    assert seen == live


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((b"", b"", 0), InvalidArgument),
        ((b"", b"", -1), InvalidArgument),
        (("a", b"", 1), TypeError),
        ((b"", None, 1), TypeError),
        ((BytesSub(b""), b"", 1), TypeError),
        ((b"", b"", 1.0), TypeError),
        ((b"", b"", 1, 1.0), TypeError),
        ((b"", b"", 2**63), OverflowError),
    ],
    ids=["limit-0", "limit-negative", "start-str", "end-none", "start-subclass", "limit-float",
         "max-examined-float", "limit-over-ssize"],
)  # fmt: skip
def test_scan_bad_input_raises_same_error(
    impl: ModuleType,
    args: tuple[Any, ...],
    exc: type,
) -> None:
    data = {b"k": impl.encode_record(False, 1, 0, b"n", b"v")}
    with pytest.raises(exc):
        impl.Reader(ListGet(data)).scan(SortedIter(data), *args)


def test_scan_corrupt_record_raises(impl: ModuleType) -> None:
    data = {b"a": impl.encode_record(False, 1, 0, b"n", b"v"), b"b": b"\x01\x04junk"}
    with pytest.raises(CorruptRecord):
        impl.Reader(ListGet(data)).scan(SortedIter(data), b"", b"", 10, 0, NOW)


# -- a real RocksDB -----------------------------------------------------------


def test_reader_over_real_rocksdb_matches_oracle(impl: ModuleType, tmp_path: Path) -> None:
    enc = _fallback.encode_record
    data: dict[bytes, bytes] = {
        b"\x00": enc(False, 1, 0, b"a", b"first"),
        b"dead": enc(True, 2, 0, b"a", b""),
        b"live": enc(False, 3, 0, b"b", b"value"),
        b"ttl-future": enc(False, 4, NOW + 1, b"b", b"later"),
        b"ttl-now": enc(False, 5, NOW, b"c", b"gone"),
        b"\xff\xff": enc(False, 6, 0, b"c", b"last" * 100),
    }
    data.update({b"run/%03d" % i: enc(i % 3 == 0, 10 + i, 0, b"r", b"" if i % 3 == 0 else b"x")
                 for i in range(40)})  # fmt: skip
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        for key, value in data.items():
            db[key] = value
        reader = impl.Reader(db.get)
        wanted = [*sorted(data), b"missing"]
        assert [reader.get(k, NOW) for k in wanted] == [
            None if k not in data else expected_item(impl, data[k], NOW) for k in wanted
        ]
        assert reader.get_many(wanted, NOW) == expected_get_many(impl, data, wanted, NOW)
        pages = [(b"", b"", 100, 0), (b"run/", b"run0", 5, 0), (b"d", b"", 3, 2),
                 (b"\xff", b"", 1, 0)]  # fmt: skip
        for start, end, limit, max_examined in pages:
            got = reader.scan(db.iter(), start, end, limit, max_examined, NOW)
            assert got == expected_scan(impl, data, start, end, limit, max_examined, NOW)
        db[b"corrupt"] = b"\x02" + b"\x00" * 30
        with pytest.raises(CorruptRecord):
            reader.get(b"corrupt", NOW)
    finally:
        db.close()


def test_compiled_and_python_readers_agree_on_real_rocksdb(tmp_path: Path) -> None:
    from edgekv import _speedups

    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        for i in range(200):
            expires = NOW + (i % 5 - 2) if i % 2 else 0  # some expired at NOW, some not
            tombstone = i % 7 == 0
            value = b"" if tombstone else b"v%d" % i
            origin = b"n%d" % (i % 3)
            db[b"k%03d" % i] = _fallback.encode_record(tombstone, i, expires, origin, value)
        readers = [m.Reader(db.get) for m in (_speedups, _fallback)]
        keys = [b"k%03d" % i for i in range(0, 220, 3)]
        results = [(r.get_many(keys, NOW), r.scan(db.iter(), b"k05", b"k15", 30, 50, NOW))
                   for r in readers]  # fmt: skip
        assert results[0] == results[1]
    finally:
        db.close()


def test_rebind_reads_through_the_new_getter(impl: ModuleType) -> None:
    """``rebind``: a reopened database is read through the same Reader (Engine.reopen)."""
    old = {b"k": impl.encode_record(False, 1, 0, b"n", b"old")}
    new = {b"k": impl.encode_record(False, 2, 0, b"n", b"new")}
    reader = impl.Reader(ListGet(old))
    get = reader.get  # held by the request layer across the reopen
    reader.rebind(ListGet(new))
    assert get(b"k", NOW) == (b"new", 2, "n", 0)
    assert reader.get_many([b"k"], NOW) == [(b"new", 2, "n", 0)]
