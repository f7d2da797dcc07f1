# cython: language_level=3
"""Compiled hot paths of edgekv; edgekv/_fallback.py twins every name here.

Import it only through edgekv.native, which picks this or the fallback.
"""

from edgekv.errors import CorruptRecord, InvalidArgument, StorageError

include "common.pxi"
include "consts.pxi"
include "record.pyx"
include "lookup.pyx"
include "digest.pyx"
include "wire.pyx"

# Every constant of consts.pxi, as compiled: tests/parity compares it with
# edgekv/storage/record.py's LAYOUT.
RECORD_LAYOUT = {
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
    "MAX_KEY_BYTES": MAX_KEY_BYTES,
}
