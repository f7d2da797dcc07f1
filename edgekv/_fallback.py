"""Pure-Python twins of edgekv._speedups: same names, signatures and errors.

Used when the extension is missing (with a warning) or EDGEKV_PUREPYTHON=1.
tests/parity runs every case through both; keep them in step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from edgekv.errors import CorruptRecord, InvalidArgument, StorageError
from edgekv.limits import MAX_KEY_BYTES
from edgekv.storage.record import (
    BUCKET_BITS,
    FLAG_EXPIRES,
    FLAG_TOMBSTONE,
    FORMAT_VERSION,
    KNOWN_FLAGS,
    LAYOUT,
    MAX_U64,
    OFF_EXPIRES,
    OFF_FLAGS,
    OFF_ORIGIN,
    OFF_ORIGIN_LEN,
    OFF_TIMESTAMP,
)

# What the compiled module reports from native/consts.pxi.
RECORD_LAYOUT = {**LAYOUT, "MAX_KEY_BYTES": MAX_KEY_BYTES}

_from_be = int.from_bytes


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_header(buf: bytes) -> int:
    n = len(buf)
    if n < OFF_ORIGIN + 1:
        raise CorruptRecord(f"record is {n} bytes; a record is at least {OFF_ORIGIN + 1}")
    if buf[0] != FORMAT_VERSION:
        raise CorruptRecord(f"record format version {buf[0]} is not supported (this build reads 1)")
    flags = buf[OFF_FLAGS]
    if flags & ~KNOWN_FLAGS:
        raise CorruptRecord(f"record flags 0x{flags:02x} have unknown bits")
    origin_len = buf[OFF_ORIGIN_LEN]
    if origin_len == 0:
        raise CorruptRecord("record origin id is empty")
    if OFF_ORIGIN + origin_len > n:
        raise CorruptRecord(
            f"record origin id needs {origin_len} bytes but only {n - OFF_ORIGIN} remain"
        )
    if not buf[OFF_ORIGIN : OFF_ORIGIN + origin_len].isascii():
        raise CorruptRecord("record origin id is not ASCII")
    if flags & FLAG_TOMBSTONE and OFF_ORIGIN + origin_len != n:
        raise CorruptRecord("tombstone record carries value bytes")
    return OFF_ORIGIN + origin_len


def _as_c_int(name: str, value: object, low: int, high: int) -> int:
    """What Cython does for a typed C integer argument, minus float truncation."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise OverflowError(f"{name} {value} does not fit in [{low}, {high}]")
    return value


_INT64 = (-(2**63), 2**63 - 1)
_SSIZE = (-sys.maxsize - 1, sys.maxsize)  # Py_ssize_t


def _require_bytes(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise TypeError(
            f"Argument '{name}' has incorrect type (expected bytes, got {type(value).__name__})"
        )


def decode_record(buf: bytes) -> tuple[bool, int, int, str, bytes]:
    """Decode a record into (tombstone, timestamp, expires_at_ms, origin, value).

    Raises CorruptRecord for bytes that are not a record of a known format version.
    """
    _require_bytes("buf", buf)
    off = _check_header(buf)
    return (
        bool(buf[OFF_FLAGS] & FLAG_TOMBSTONE),
        _from_be(buf[OFF_TIMESTAMP:OFF_EXPIRES]),
        _from_be(buf[OFF_EXPIRES:OFF_ORIGIN_LEN]),
        buf[OFF_ORIGIN:off].decode("ascii"),
        buf[off:],
    )


def record_version(buf: bytes) -> tuple[int, str]:
    """The (timestamp, origin) of a record without copying its value."""
    _require_bytes("buf", buf)
    off = _check_header(buf)
    return _from_be(buf[OFF_TIMESTAMP:OFF_EXPIRES]), buf[OFF_ORIGIN:off].decode("ascii")


def encode_record(
    tombstone: bool, timestamp: int, expires_at_ms: int, origin: bytes, value: bytes
) -> bytes:
    """Encode a record; ``origin`` is the ASCII node id (1..255 bytes).

    A tombstone must have an empty value. Raises InvalidArgument otherwise.
    """
    # Same order of checks as _speedups: argument types, then the integers, then values.
    _require_bytes("origin", origin)
    _require_bytes("value", value)
    _as_c_int("timestamp", timestamp, 0, MAX_U64)
    _as_c_int("expires_at_ms", expires_at_ms, 0, MAX_U64)
    if not 1 <= len(origin) <= 255:
        raise InvalidArgument(f"origin id is {len(origin)} bytes; it must be 1 to 255")
    if not origin.isascii():
        raise InvalidArgument(f"origin id {origin!r} is not ASCII")
    flags = 0
    if tombstone:
        if value:
            raise InvalidArgument("a tombstone has no value")
        flags |= FLAG_TOMBSTONE
    if expires_at_ms:
        flags |= FLAG_EXPIRES
    return b"".join(
        (
            bytes((FORMAT_VERSION, flags)),
            timestamp.to_bytes(8, "big"),
            expires_at_ms.to_bytes(8, "big"),
            bytes((len(origin),)),
            origin,
            value,
        )
    )


def _check_key(key: bytes) -> None:
    n = len(key)
    if n == 0:
        raise InvalidArgument("key is empty; keys are 1 to 1024 bytes")
    if n > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {n} bytes; the limit is {MAX_KEY_BYTES}")


def _live_item(raw: object, now_ms: int) -> tuple[bytes, int, str, int] | None:
    if type(raw) is not bytes:
        raise CorruptRecord(f"stored record is {type(raw).__name__}, not bytes")
    off = _check_header(raw)
    flags = raw[OFF_FLAGS]
    expires_at_ms = 0
    if flags & FLAG_TOMBSTONE:
        return None
    if flags & FLAG_EXPIRES:
        expires_at_ms = _from_be(raw[OFF_EXPIRES:OFF_ORIGIN_LEN])
        if now_ms < 0:
            now_ms = _wall_ms()
        if expires_at_ms <= now_ms:
            return None
    return (
        raw[off:],
        _from_be(raw[OFF_TIMESTAMP:OFF_EXPIRES]),
        raw[OFF_ORIGIN:off].decode("ascii"),
        expires_at_ms,
    )


class Reader:
    """Point reads and scans of one data column family.

    ``get`` is the column family's bound ``Rdict.get`` (raw mode): it takes a key
    or a list of keys. ``now_ms`` < 0 means "read the wall clock"; tests pass a
    fixed time. Safe to call from several threads: it holds no mutable state.
    """

    __slots__ = ("_get",)

    def __init__(self, get: Callable[[Any], Any]) -> None:
        self._get = get

    def rebind(self, get: Callable[[Any], Any]) -> None:
        """Read through ``get`` from now on (the engine reopened its database)."""
        self._get = get

    def get(self, key: bytes, now_ms: int = -1) -> tuple[bytes, int, str, int] | None:
        """The live item under ``key``, or None (absent, deleted or expired)."""
        _require_bytes("key", key)
        _as_c_int("now_ms", now_ms, *_INT64)
        _check_key(key)
        raw = self._get(key)
        if raw is None:
            return None
        return _live_item(raw, now_ms)

    def get_many(
        self, keys: list[bytes], now_ms: int = -1
    ) -> list[tuple[bytes, int, str, int] | None]:
        """``get`` for each key, in order, through one RocksDB multi-get."""
        if type(keys) is not list:
            raise TypeError(
                f"Argument 'keys' has incorrect type (expected list, got {type(keys).__name__})"
            )
        _as_c_int("now_ms", now_ms, *_INT64)
        for i, key in enumerate(keys):
            if type(key) is not bytes:
                raise InvalidArgument(f"keys[{i}] must be bytes, got {type(key).__name__}")
            _check_key(key)
        if now_ms < 0:
            now_ms = _wall_ms()
        raws = self._get(keys)
        if len(raws) != len(keys):
            raise StorageError(f"multi-get returned {len(raws)} results for {len(keys)} keys")
        return [None if raw is None else _live_item(raw, now_ms) for raw in raws]

    def scan(
        self,
        it: Any,
        start: bytes,
        end: bytes,
        limit: int,
        max_examined: int = 0,
        now_ms: int = -1,
    ) -> tuple[list[tuple[bytes, bytes, int, str, int]], bytes | None]:
        """Live items with start <= key < end (``end`` empty = no bound), in key order.

        ``it`` is a fresh RdictIter of the data column family. Returns
        ``(items, next_key)``: items are (key, value, timestamp, origin,
        expires_at_ms); ``next_key`` is the last key looked at when more may
        follow, else None. At most ``max_examined`` records are read (0 = no cap),
        so a run of tombstones cannot make one page unbounded work.
        """
        _require_bytes("start", start)
        _require_bytes("end", end)
        _as_c_int("limit", limit, *_SSIZE)
        _as_c_int("max_examined", max_examined, *_SSIZE)
        _as_c_int("now_ms", now_ms, *_INT64)
        if limit < 1:
            raise InvalidArgument(f"scan limit is {limit}; it must be at least 1")
        if now_ms < 0:
            now_ms = _wall_ms()
        items: list[tuple[bytes, bytes, int, str, int]] = []
        examined = 0
        last = None
        it.seek(start)
        while it.valid():
            key = it.key()
            if end and key >= end:
                return items, None
            if len(items) >= limit or (max_examined and examined >= max_examined):
                return items, last
            item = _live_item(it.value(), now_ms)
            examined += 1
            if item is not None:
                items.append((key, *item))
            last = key
            it.next()
        return items, None


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_M64 = (1 << 64) - 1


def _fnv1a(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _M64
    return h


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k


def key_bucket(key: bytes) -> int:
    """The digest bucket (0..65535) of a key; it never changes with the version."""
    _require_bytes("key", key)
    return _fmix64(_fnv1a(_FNV_OFFSET, key)) >> (64 - BUCKET_BITS)


def version_hash(key: bytes, timestamp: int, origin: bytes) -> int:
    """64-bit hash of (key, version): XOR-ed into the key's bucket digest."""
    _require_bytes("key", key)
    _require_bytes("origin", origin)
    _as_c_int("timestamp", timestamp, 0, MAX_U64)
    h = _fnv1a(_FNV_OFFSET, key)
    h = _fnv1a(h ^ 0xFF, timestamp.to_bytes(8, "big"))
    h = _fnv1a(h, origin)
    return _fmix64(h)


def record_hash(key: bytes, record: bytes) -> int:
    """``version_hash`` of a stored record's version, read straight from its header."""
    _require_bytes("key", key)
    _require_bytes("record", record)
    off = _check_header(record)
    h = _fnv1a(_FNV_OFFSET, key)
    h = _fnv1a(h ^ 0xFF, record[OFF_TIMESTAMP:OFF_EXPIRES])
    h = _fnv1a(h, record[OFF_ORIGIN:off])
    return _fmix64(h)


# -- KV.Stream's LOCAL get on the wire (native/wire.pyx) -------------------------

_TAG_ID, _TAG_TIMEOUT_MS, _TAG_REQ_GET, _TAG_KEY = 0x08, 0x10, 0x1A, 0x0A


def _read_varint(raw: bytes, i: int, end: int) -> tuple[int, int]:
    """(value, offset after it) of the varint at raw[i:end]; offset -1 if malformed."""
    value = shift = 0
    while i < end and shift < 64:
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value & MAX_U64, i
        shift += 7
    return 0, -1


def _read_size(raw: bytes, i: int, end: int) -> tuple[int, int]:
    """A length prefix: a varint of at most 5 bytes, minimal, under 2**31; offset -1 if not."""
    value, after = _read_varint(raw, i, min(end, i + 5))
    if after < 0 or value > 0x7FFFFFFF or (after - i > 1 and raw[after - 1] == 0):
        return 0, -1
    return value, after


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(data)) + data


def stream_plain_get(raw: bytes) -> tuple[int, int, bytes] | None:
    """``(id, timeout_ms, key)`` if ``raw`` is a StreamRequest whose operation is a get
    that sets only its key (a LOCAL read), each field once and no other field; None
    for anything else, which the caller decodes with protobuf."""
    _require_bytes("raw", raw)
    n, i, seen = len(raw), 0, set()
    request_id = timeout_ms = 0
    key: bytes | None = None
    while i < n:
        tag, i = raw[i], i + 1  # one byte: a longer (padded) tag is protobuf's to judge
        if tag in seen:
            return None
        seen.add(tag)
        if tag == _TAG_ID:
            request_id, i = _read_varint(raw, i, n)
        elif tag == _TAG_TIMEOUT_MS:
            timeout_ms, i = _read_varint(raw, i, n)
            if timeout_ms > 0xFFFFFFFF:
                return None
        elif tag == _TAG_REQ_GET:
            length, i = _read_size(raw, i, n)
            if i < 0 or length > n - i or length == 0 or raw[i] != _TAG_KEY:
                return None
            end = i + length
            length, i = _read_size(raw, i + 1, end)
            if i < 0 or length != end - i:
                return None
            key, i = raw[i:end], end
        else:
            return None
        if i < 0:
            return None
    return None if key is None else (request_id, timeout_ms, key)


def stream_get_answer(
    request_id: int, found: tuple[bytes, int, str, int] | None, served_by: str
) -> bytes:
    """The StreamResponse answering get ``request_id`` with ``found`` ((value, timestamp,
    origin, expires_at_ms) or None: not found) read on node ``served_by``: the bytes
    protobuf writes for the message KVMessages.get_now fills."""
    rid = _as_c_int("request_id", request_id, 0, MAX_U64)
    if type(served_by) is not str:
        got = type(served_by).__name__
        raise TypeError(f"Argument 'served_by' has incorrect type (expected str, got {got})")
    get = b""
    if found is not None:
        value, timestamp, origin, expires_at_ms = found
        if type(value) is not bytes or type(origin) is not str:
            raise TypeError(
                f"found must be (bytes, int, str, int), got ({type(value).__name__}, "
                f"{type(timestamp).__name__}, {type(origin).__name__}, "
                f"{type(expires_at_ms).__name__})"
            )
        _as_c_int("timestamp", timestamp, 0, MAX_U64)
        _as_c_int("expires_at_ms", expires_at_ms, 0, MAX_U64)
        version = (b"\x08" + _varint(timestamp) if timestamp else b"") + (
            _field(0x12, origin.encode()) if origin else b""
        )
        get = b"\x08\x01" + (_field(0x12, value) if value else b"") + _field(0x1A, version)
    if served_by:
        get += _field(0x22, served_by.encode())
    if found is not None and found[3]:
        get += b"\x28" + _varint(found[3])
    return (b"\x08" + _varint(rid) if rid else b"") + _field(0x12, get)
