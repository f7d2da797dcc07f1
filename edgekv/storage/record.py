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

native/consts.pxi mirrors these numbers for the compiled decoder; the parity
tests feed both implementations the same bytes.

A version is ``(timestamp, origin)``: ordered first by timestamp, then by the
origin id's bytes. The order is total and the same on every node, which is what
makes last-writer-wins converge.
"""

from __future__ import annotations

from typing import NamedTuple

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
