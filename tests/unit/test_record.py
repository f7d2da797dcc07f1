"""edgekv.storage.record: the byte layout, its round trip, and the version order.

Runs through edgekv.native (whichever implementation is active); tests/parity
checks that both implementations agree.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv import native
from edgekv.errors import CorruptRecord, EdgeKVError, StorageError
from edgekv.storage import record
from edgekv.storage.record import Item, Record, Version

origins = st.text(st.characters(max_codepoint=127), min_size=1, max_size=255)
u64 = st.integers(0, record.MAX_U64)


def test_layout_offsets_are_contiguous() -> None:
    assert record.OFF_FORMAT == 0
    assert record.OFF_FLAGS == record.OFF_FORMAT + 1
    assert record.OFF_TIMESTAMP == record.OFF_FLAGS + 1
    assert record.OFF_EXPIRES == record.OFF_TIMESTAMP + 8
    assert record.OFF_ORIGIN_LEN == record.OFF_EXPIRES + 8
    assert record.OFF_ORIGIN == record.OFF_ORIGIN_LEN + 1 == record.HEADER_FIXED_BYTES == 19
    assert record.KNOWN_FLAGS == record.FLAG_TOMBSTONE | record.FLAG_EXPIRES == 0x03
    assert record.MAX_ORIGIN_BYTES == 255 and record.MAX_U64 == 2**64 - 1


def test_encode_writes_documented_bytes() -> None:
    raw = native.encode_record(False, 0x0102030405060708, 0x1112131415161718, b"fra-1", b"hi")
    assert raw == (
        b"\x01"  # format version
        b"\x02"  # flags: has expiry
        b"\x01\x02\x03\x04\x05\x06\x07\x08"  # timestamp, big-endian
        b"\x11\x12\x13\x14\x15\x16\x17\x18"  # expires_at_ms, big-endian
        b"\x05fra-1"  # origin length and id
        b"hi"  # value
    )


def test_encode_tombstone_has_flag_and_no_value() -> None:
    raw = native.encode_record(True, 7, 0, b"n", b"")
    assert raw[record.OFF_FLAGS] == record.FLAG_TOMBSTONE
    assert len(raw) == record.OFF_ORIGIN + 1
    assert native.decode_record(raw) == (True, 7, 0, "n", b"")


@settings(max_examples=200)
@given(
    tombstone=st.booleans(), timestamp=u64, expires_at_ms=u64, origin=origins,
    value=st.binary(max_size=200),
)  # fmt: skip
def test_record_round_trips(
    tombstone: bool, timestamp: int, expires_at_ms: int, origin: str, value: bytes
) -> None:
    value = b"" if tombstone else value
    raw = native.encode_record(tombstone, timestamp, expires_at_ms, origin.encode(), value)
    assert len(raw) == record.HEADER_FIXED_BYTES + len(origin) + len(value)
    rec = Record(*native.decode_record(raw))
    assert rec == (tombstone, timestamp, expires_at_ms, origin, value)
    assert rec.version == Version(timestamp, origin) == native.record_version(raw)
    flags = raw[record.OFF_FLAGS]
    assert bool(flags & record.FLAG_TOMBSTONE) == tombstone
    assert bool(flags & record.FLAG_EXPIRES) == (expires_at_ms != 0)
    fixed = struct.unpack_from(">BBQQB", raw)
    assert fixed == (record.FORMAT_VERSION, flags, timestamp, expires_at_ms, len(origin))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "record is 0 bytes; a record is at least 20"),
        (b"\x01" * 19, "record is 19 bytes"),
        (b"\x02" + bytes(17) + b"\x01n", "format version 2 is not supported"),
        (b"\x01\x04" + bytes(16) + b"\x01n", "flags 0x04 have unknown bits"),
        (b"\x01\x00" + bytes(16) + b"\x00n", "origin id is empty"),
        (b"\x01\x00" + bytes(16) + b"\x05no", "origin id needs 5 bytes but only 2 remain"),
        (b"\x01\x01" + bytes(16) + b"\x01nvalue", "tombstone record carries value bytes"),
    ],
    ids=["empty", "short", "version", "flags", "no-origin", "truncated-origin", "tombstone-value"],
)
def test_decode_malformed_record_raises_corrupt_record(raw: bytes, message: str) -> None:
    with pytest.raises(CorruptRecord, match=message):
        native.decode_record(raw)
    with pytest.raises(CorruptRecord):
        native.record_version(raw)


def test_corrupt_record_is_storage_error() -> None:
    assert issubclass(CorruptRecord, StorageError)
    assert issubclass(CorruptRecord, EdgeKVError)


def test_version_orders_by_timestamp_then_origin() -> None:
    assert Version(2, "a") > Version(1, "z")
    assert Version(1, "b") > Version(1, "a")
    assert Version(1, "a") == Version(1, "a")
    assert max([Version(5, "n1"), Version(5, "n2"), Version(4, "n9")]) == Version(5, "n2")


@given(a=st.tuples(u64, origins), b=st.tuples(u64, origins))
def test_version_order_equals_timestamp_then_origin_bytes(
    a: tuple[int, str], b: tuple[int, str]
) -> None:
    # The order every node must agree on: the timestamp, then the origin's bytes.
    by_bytes = (a[0], a[1].encode()) < (b[0], b[1].encode())
    assert (Version(*a) < Version(*b)) == by_bytes


def test_item_version_and_fields() -> None:
    item = Item(b"v", 9, "n", 0)
    assert item.version == Version(9, "n")
    assert (item.value, item.timestamp, item.origin, item.expires_at_ms) == (b"v", 9, "n", 0)


@settings(max_examples=200)
@given(tombstone=st.booleans(), timestamp=u64, expires_at_ms=u64, origin=origins)
def test_header_accessors_agree_with_decode(
    tombstone: bool, timestamp: int, expires_at_ms: int, origin: str
) -> None:
    raw = native.encode_record(tombstone, timestamp, expires_at_ms, origin.encode(), b"")
    decoded = Record(*native.decode_record(raw))
    assert record.is_tombstone(raw) == decoded.tombstone
    assert record.timestamp_of(raw) == decoded.timestamp
    assert record.expiry_of(raw) == (decoded.expires_at_ms or None)
    assert record.unpack_version(record.packed_version(raw)) == decoded.version
