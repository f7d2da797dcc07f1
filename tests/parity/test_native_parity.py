"""The compiled read path and its pure-Python twin behave identically."""

from __future__ import annotations

import inspect
import os
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

from edgekv import _fallback as PYTHON
from edgekv import _speedups as COMPILED
from edgekv import native
from edgekv.errors import CorruptRecord, InvalidArgument
from edgekv.storage import record

FUNCTIONS = ["decode_record", "encode_record", "record_version", "key_bucket", "version_hash",
             "record_hash"]  # fmt: skip
READER_METHODS = ["get", "get_many", "scan"]

origins = st.binary(min_size=1, max_size=255).filter(lambda b: b.isascii())
u64 = st.integers(0, 2**64 - 1)
records = st.tuples(st.booleans(), u64, u64, origins, st.binary(max_size=300)).map(
    lambda t: (t[0], t[1], t[2], t[3], b"" if t[0] else t[4])
)


def params(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults (annotations differ: Cython has none)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """('ok', result) or ('error', exception type): what parity compares."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # parity wants the same class, whatever it is
        return ("error", type(exc))


class ListGet:
    """A dict's get with rocksdict's calling convention (a key or a list of keys)."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def __call__(self, key: bytes | list[bytes]) -> Any:
        if isinstance(key, list):
            return [self.data.get(k) for k in key]
        return self.data.get(key)


class SortedIter:
    """The RdictIter subset Reader.scan uses, over a sorted dict."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.keys = sorted(data)
        self.data = data
        self.i = 0

    def seek(self, key: bytes) -> None:
        self.i = next((i for i, k in enumerate(self.keys) if k >= key), len(self.keys))

    def valid(self) -> bool:
        return self.i < len(self.keys)

    def key(self) -> bytes:
        return self.keys[self.i]

    def value(self) -> bytes:
        return self.data[self.keys[self.i]]

    def next(self) -> None:
        self.i += 1


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signatures_equal(name: str) -> None:
    compiled, python = COMPILED, PYTHON
    assert params(getattr(compiled, name)) == params(getattr(python, name))


@pytest.mark.parametrize("name", READER_METHODS)
def test_reader_signatures_equal(name: str) -> None:
    compiled, python = COMPILED, PYTHON
    assert params(getattr(compiled.Reader, name)) == params(getattr(python.Reader, name))


def test_record_layout_matches_record_module(impl: ModuleType) -> None:
    from edgekv.limits import MAX_KEY_BYTES

    layout = dict(impl.RECORD_LAYOUT)
    assert layout.pop("MAX_KEY_BYTES") == MAX_KEY_BYTES
    assert layout == {name: getattr(record, name) for name in layout}
    assert set(layout) == {"FORMAT_VERSION", "FLAG_TOMBSTONE", "FLAG_EXPIRES", "OFF_TIMESTAMP",
                           "OFF_EXPIRES", "OFF_ORIGIN_LEN", "OFF_ORIGIN"}  # fmt: skip


@settings(max_examples=300)
@given(rec=records)
def test_encode_decode_round_trip_identical(rec: tuple[bool, int, int, bytes, bytes]) -> None:
    compiled, python = COMPILED, PYTHON
    encoded = compiled.encode_record(*rec)
    assert encoded == python.encode_record(*rec)
    tombstone, ts, expires, origin, value = rec
    decoded = (tombstone, ts, expires, origin.decode("ascii"), value)
    assert compiled.decode_record(encoded) == python.decode_record(encoded) == decoded
    assert compiled.record_version(encoded) == python.record_version(encoded) == (ts, decoded[3])
    assert compiled.record_hash(b"k", encoded) == python.record_hash(b"k", encoded)
    assert compiled.record_hash(b"k", encoded) == python.version_hash(b"k", ts, origin)


@settings(max_examples=500)
@given(junk=st.binary(max_size=64))
def test_junk_bytes_same_outcome(junk: bytes) -> None:
    compiled, python = COMPILED, PYTHON
    for name in ("decode_record", "record_version"):
        assert outcome(getattr(compiled, name), junk) == outcome(getattr(python, name), junk)
    assert outcome(compiled.record_hash, b"k", junk) == outcome(python.record_hash, b"k", junk)


@settings(max_examples=200)
@given(rec=records, cut=st.integers(0, 40), flip=st.integers(0, 255))
def test_damaged_records_same_outcome(
    rec: tuple[bool, int, int, bytes, bytes],
    cut: int,
    flip: int,
) -> None:
    compiled, python = COMPILED, PYTHON
    encoded = compiled.encode_record(*rec)
    for damaged in (
        encoded[:cut],
        bytes([flip]) + encoded[1:],
        encoded[:1] + bytes([flip]) + encoded[2:],
    ):
        assert outcome(compiled.decode_record, damaged) == outcome(python.decode_record, damaged)


@pytest.mark.parametrize(
    "args",
    [
        (False, 1, 0, b"", b"v"),  # empty origin
        (False, 1, 0, b"x" * 256, b"v"),  # origin too long
        (True, 1, 0, b"n", b"not empty"),  # tombstone with a value
        (False, -1, 0, b"n", b"v"),  # negative timestamp
        (False, 2**64, 0, b"n", b"v"),  # timestamp overflow
        (False, 1, 0, "n", b"v"),  # origin not bytes
        (False, 1, 0, b"n", None),  # value None
    ],
)
def test_encode_bad_input_same_error(args: tuple[Any, ...]) -> None:
    compiled, python = COMPILED, PYTHON
    got = outcome(compiled.encode_record, *args)
    assert got[0] == "error"
    assert got == outcome(python.encode_record, *args)


@settings(max_examples=300)
@given(key=st.binary(min_size=0, max_size=64), ts=u64, origin=origins)
def test_hashes_identical(key: bytes, ts: int, origin: bytes) -> None:
    compiled, python = COMPILED, PYTHON
    assert compiled.key_bucket(key) == python.key_bucket(key)
    assert 0 <= compiled.key_bucket(key) < 65536
    assert compiled.version_hash(key, ts, origin) == python.version_hash(key, ts, origin)


def make_store(impl: ModuleType, now: int) -> dict[bytes, bytes]:
    enc = impl.encode_record
    return {
        b"live": enc(False, 10, 0, b"a", b"value"),
        b"dead": enc(True, 11, 0, b"a", b""),
        b"ttl-future": enc(False, 12, now + 1000, b"b", b"later"),
        b"ttl-past": enc(False, 13, now - 1, b"b", b"gone"),
        b"ttl-now": enc(False, 14, now, b"b", b"edge"),  # expiry is exclusive: gone at now
    }


def test_reader_get_tombstones_and_expiry(impl: ModuleType) -> None:
    now = 1_000_000
    reader = impl.Reader(ListGet(make_store(impl, now)))
    assert reader.get(b"live", now) == (b"value", 10, "a", 0)
    assert reader.get(b"ttl-future", now) == (b"later", 12, "b", now + 1000)
    for key in (b"dead", b"ttl-past", b"ttl-now", b"missing"):
        assert reader.get(key, now) is None
    assert reader.get_many([b"live", b"dead", b"missing", b"live"], now) == [
        (b"value", 10, "a", 0), None, None, (b"value", 10, "a", 0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda r: r.get(b""), InvalidArgument),
        (lambda r: r.get(b"k" * 1025), InvalidArgument),
        (lambda r: r.get("str"), TypeError),
        (lambda r: r.get(None), TypeError),
        (lambda r: r.get_many([b"ok", ""]), InvalidArgument),
        (lambda r: r.get_many((b"tuple",)), TypeError),
        (lambda r: r.get(b"corrupt"), CorruptRecord),
        (lambda r: r.get(b"notbytes"), CorruptRecord),
    ],
)
def test_reader_bad_input_same_error(
    impl: ModuleType, call: Callable[[Any], Any], exc: type
) -> None:
    reader = impl.Reader(ListGet({b"corrupt": b"\x09junk", b"notbytes": 42}))  # type: ignore[dict-item]
    with pytest.raises(exc):
        call(reader)


def test_reader_scan_pages_and_skips(impl: ModuleType) -> None:
    now = 1_000_000
    data = make_store(impl, now)
    data.update(
        {b"z%02d" % i: impl.encode_record(False, 20 + i, 0, b"c", b"%d" % i) for i in range(10)}
    )
    reader = impl.Reader(ListGet(data))
    items, last = reader.scan(SortedIter(data), b"", b"", 3, 0, now)
    assert [i[0] for i in items] == [b"live", b"ttl-future", b"z00"] and last == b"z00"
    items, last = reader.scan(SortedIter(data), b"z05", b"z08", 100, 0, now)
    assert [i[0] for i in items] == [b"z05", b"z06", b"z07"] and last is None
    items, last = reader.scan(SortedIter(data), b"", b"", 100, 2, now)
    # The examined cap (2: "dead", "live") ends the page early; it resumes after "live".
    assert [i[0] for i in items] == [b"live"] and last == b"live"
    with pytest.raises(InvalidArgument):
        reader.scan(SortedIter(data), b"", b"", 0)


@settings(max_examples=100, deadline=None)
@given(rows=st.dictionaries(st.binary(min_size=1, max_size=8), records, max_size=20),
       limit=st.integers(1, 25), start=st.binary(max_size=3))  # fmt: skip
def test_reader_scan_same_output(rows: dict[bytes, Any], limit: int, start: bytes) -> None:
    compiled, python = COMPILED, PYTHON
    data = {k: compiled.encode_record(*r) for k, r in rows.items()}
    got = [
        impl.Reader(ListGet(data)).scan(SortedIter(data), start, b"", limit, 0, 5)
        for impl in (compiled, python)
    ]
    assert got[0] == got[1]


def test_reader_over_real_rocksdb_same_results(tmp_path: Path) -> None:
    compiled, python = COMPILED, PYTHON
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        now = 1_000_000
        for key, value in make_store(compiled, now).items():
            db[key] = value
        keys = [b"live", b"dead", b"ttl-future", b"ttl-past", b"missing"]
        results = [impl.Reader(db.get).get_many(keys, now) for impl in (compiled, python)]
        assert results[0] == results[1]
        scans = [
            impl.Reader(db.get).scan(db.iter(), b"", b"", 10, 0, now) for impl in (compiled, python)
        ]
        assert scans[0] == scans[1]
    finally:
        db.close()


def test_native_active_is_compiled_unless_forced() -> None:
    expected = "python" if os.environ.get("EDGEKV_PUREPYTHON") == "1" else "cython"
    assert expected == native.ACTIVE


def test_purepython_env_selects_fallback() -> None:
    out = subprocess.run(
        [sys.executable, "-c",
         "import edgekv.native as n; print(n.ACTIVE, n.decode_record.__module__)"],
        env={**os.environ, "EDGEKV_PUREPYTHON": "1"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["python", "edgekv._fallback"]
