"""The stored record: a small binary header in front of the value bytes.

Every value in the data column family, and every entry of the replication log,
is one record. The layout is fixed by the format version in byte 0, so it can
evolve: a reader refuses a version it does not know instead of misreading it.

Layout, format version 1 (all integers big-endian):

======  ====  ==============================================================
offset  size  field
======  ====  ==============================================================
0       1     format version (1)
1       1     flags: 0x01 tombstone, 0x02 has expiry; other bits must be 0
2       8     version timestamp: hybrid-logical-clock value (see clock.py)
10      8     expires_at_ms: absolute Unix time in ms; 0 when there is none
18      1     n = length of the origin node id (1..255)
19      n     origin node id, ASCII
19+n    ...   value bytes (empty for a tombstone)
======  ====  ==============================================================

The integers are written once, below, and collected in ``LAYOUT``:
native/consts.pxi mirrors every entry for the compiled decoder, the compiled
module reports them back as ``RECORD_LAYOUT``, and tests/parity checks that the
two agree. Only this module and the native pair (edgekv/native.py) read record
bytes; the header accessors here are for cold paths (collection, digests,
batching) and trust a record the native decoder has already validated.

A version is ``(timestamp, origin)``: ordered first by timestamp, then by the
origin id's bytes. The order is total and the same on every node, which is what
makes last-writer-wins converge.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# Every integer in stored bytes is big-endian: the record header, the log's seq
# keys, meta values, the digest index. These are the one definition of each.
U64 = struct.Struct(">Q")
U16 = struct.Struct(">H")

FORMAT_VERSION = 1
FLAG_TOMBSTONE = 0x01
FLAG_EXPIRES = 0x02
KNOWN_FLAGS = FLAG_TOMBSTONE | FLAG_EXPIRES

OFF_FORMAT = 0
OFF_FLAGS = 1
OFF_TIMESTAMP = 2
OFF_EXPIRES = 10
OFF_ORIGIN_LEN = 18
OFF_ORIGIN = 19
HEADER_FIXED_BYTES = OFF_ORIGIN  # header size before the origin id
MAX_ORIGIN_BYTES = 255
MAX_U64 = (1 << 64) - 1
# A key's anti-entropy bucket is the top BUCKET_BITS of its hash (native
# key_bucket); the digest tree (storage/digest.py) has 2**BUCKET_BITS buckets.
BUCKET_BITS = 16

# The table native/consts.pxi mirrors, name for name (plus MAX_KEY_BYTES from
# limits.py); edgekv._speedups.RECORD_LAYOUT must report exactly these values.
LAYOUT: dict[str, int] = {
    "FORMAT_VERSION": FORMAT_VERSION,
    "FLAG_TOMBSTONE": FLAG_TOMBSTONE,
    "FLAG_EXPIRES": FLAG_EXPIRES,
    "KNOWN_FLAGS": KNOWN_FLAGS,
    "OFF_FLAGS": OFF_FLAGS,
    "OFF_TIMESTAMP": OFF_TIMESTAMP,
    "OFF_EXPIRES": OFF_EXPIRES,
    "OFF_ORIGIN_LEN": OFF_ORIGIN_LEN,
    "OFF_ORIGIN": OFF_ORIGIN,
    "BUCKET_BITS": BUCKET_BITS,
}


class Version(NamedTuple):
    """A write's identity and its place in the last-writer-wins order."""

    timestamp: int
    origin: str


class Record(NamedTuple):
    """A decoded record: what ``native.decode_record`` returns, as a tuple."""

    tombstone: bool
    timestamp: int
    expires_at_ms: int  # 0 = never
    origin: str
    value: bytes

    @property
    def version(self) -> Version:
        return Version(self.timestamp, self.origin)


class Item(NamedTuple):
    """A live value as a read returns it: what ``Reader.get`` yields, as a tuple."""

    value: bytes
    timestamp: int
    origin: str
    expires_at_ms: int  # 0 = never

    @property
    def version(self) -> Version:
        return Version(self.timestamp, self.origin)


class Change(NamedTuple):
    """A record that became this node's version of ``key`` (local write or apply)."""

    key: bytes
    record: bytes


# -- header accessors for validated records (cold paths) ------------------------


def is_tombstone(record: bytes) -> bool:
    """Whether ``record`` is a tombstone."""
    return bool(record[OFF_FLAGS] & FLAG_TOMBSTONE)


def timestamp_of(record: bytes) -> int:
    """The version timestamp (HLC) of ``record``."""
    return int(U64.unpack_from(record, OFF_TIMESTAMP)[0])


def expiry_of(record: bytes) -> int | None:
    """The absolute expiry of ``record`` in Unix ms; None without the expiry flag.

    Readers treat a flagged record as expired from this time on, whatever its value.
    """
    if record[OFF_FLAGS] & FLAG_EXPIRES:
        return int(U64.unpack_from(record, OFF_EXPIRES)[0])
    return None


def packed_version(record: bytes) -> bytes:
    """``record``'s version as bytes: timestamp (u64 BE) then origin id.

    The digest index stores this per key; ``unpack_version`` reads it back.
    """
    origin_len = record[OFF_ORIGIN_LEN]
    return record[OFF_TIMESTAMP:OFF_EXPIRES] + record[OFF_ORIGIN : OFF_ORIGIN + origin_len]


def unpack_version(raw: bytes) -> Version:
    """The version packed by ``packed_version``."""
    return Version(int(U64.unpack_from(raw)[0]), raw[U64.size :].decode("ascii"))


class ScanItem(NamedTuple):
    """A live item as a scan returns it."""

    key: bytes
    value: bytes
    timestamp: int
    origin: str
    expires_at_ms: int

    @property
    def version(self) -> Version:
        return Version(self.timestamp, self.origin)


class ScanPage(NamedTuple):
    """A page of a scan; ``next_start`` resumes it (None when the range is done)."""

    items: list[ScanItem]
    next_start: bytes | None
