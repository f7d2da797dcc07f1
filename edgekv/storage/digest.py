"""Anti-entropy digests: a two-level hash tree per placement group, kept current.

Every record (tombstones and expired records included) contributes
``version_hash(key, version)`` to its key's bucket; a bucket's digest is the
XOR of its records' hashes, so replacing a version is two XORs and the tree is
maintained on every write and apply in the same WriteBatch, never rebuilt.
65,536 buckets form 256 groups of 256; two nodes compare the 256 group
digests, then the buckets of differing groups, then list only differing
buckets, so a sync costs in proportion to the difference, not the data.

The ``digest`` column family is the index that makes listing a bucket cheap:
``len(placement) | placement | bucket (u16 BE) | key -> timestamp (u64 BE) | origin``.
Bucket digests persist in ``meta`` under ``digest/ | len(placement) | placement | bucket``.
"""

from __future__ import annotations

import struct
from array import array

from edgekv.storage.record import OFF_EXPIRES, OFF_ORIGIN, OFF_ORIGIN_LEN, OFF_TIMESTAMP

BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS
GROUPS = 256
BUCKETS_PER_GROUP = BUCKETS // GROUPS
META_PREFIX = b"digest/"

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


def placement_tag(placement: bytes) -> bytes:
    if len(placement) > 255:
        raise ValueError(f"placement prefix is {len(placement)} bytes; the limit is 255")
    return bytes((len(placement),)) + placement


def index_key(placement: bytes, bucket: int, key: bytes) -> bytes:
    return placement_tag(placement) + _U16.pack(bucket) + key


def bucket_index_prefix(placement: bytes, bucket: int) -> bytes:
    return placement_tag(placement) + _U16.pack(bucket)


def meta_key(placement: bytes, bucket: int) -> bytes:
    return META_PREFIX + placement_tag(placement) + _U16.pack(bucket)


def parse_meta_key(raw: bytes) -> tuple[bytes, int]:
    """(placement, bucket) of a persisted bucket-digest key."""
    n = raw[len(META_PREFIX)]
    start = len(META_PREFIX) + 1
    return raw[start : start + n], _U16.unpack_from(raw, start + n)[0]


def index_version_of(record: bytes) -> bytes:
    """The index value for a stored record: its timestamp (u64 BE) and origin id."""
    origin_len = record[OFF_ORIGIN_LEN]
    return record[OFF_TIMESTAMP:OFF_EXPIRES] + record[OFF_ORIGIN : OFF_ORIGIN + origin_len]


def decode_index_version(raw: bytes) -> tuple[int, str]:
    return _U64.unpack_from(raw)[0], raw[8:].decode("ascii")


def decode_u64(raw: bytes) -> int:
    return int(_U64.unpack(raw)[0])


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


class DigestTree:
    """Bucket and group digests of one placement group, in memory.

    Owned by the engine and changed only under its write lock, after the
    WriteBatch carrying the same change has been written.
    """

    __slots__ = ("buckets", "groups")

    def __init__(self) -> None:
        self.buckets = array("Q", bytes(8 * BUCKETS))
        self.groups = array("Q", bytes(8 * GROUPS))

    def set_bucket(self, bucket: int, digest: int) -> None:
        old = self.buckets[bucket]
        self.buckets[bucket] = digest
        self.groups[bucket // BUCKETS_PER_GROUP] ^= old ^ digest

    def group_digests(self) -> list[int]:
        return list(self.groups)

    def bucket_digests(self, group: int) -> list[int]:
        start = group * BUCKETS_PER_GROUP
        return list(self.buckets[start : start + BUCKETS_PER_GROUP])
