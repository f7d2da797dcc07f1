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

RECORD_LAYOUT = {
    "FORMAT_VERSION": FORMAT_VERSION,
    "FLAG_TOMBSTONE": FLAG_TOMBSTONE,
    "FLAG_EXPIRES": FLAG_EXPIRES,
    "OFF_TIMESTAMP": OFF_TIMESTAMP,
    "OFF_EXPIRES": OFF_EXPIRES,
    "OFF_ORIGIN_LEN": OFF_ORIGIN_LEN,
    "OFF_ORIGIN": OFF_ORIGIN,
    "MAX_KEY_BYTES": MAX_KEY_BYTES,
}
