# Mirrors edgekv/storage/record.py (LAYOUT) and edgekv/limits.py (MAX_KEY_BYTES):
# change both together. Every name here is reported back in RECORD_LAYOUT
# (_speedups.pyx), and tests/parity/test_layout_consts.py checks the compiled
# values against record.LAYOUT.
cdef enum:
    FORMAT_VERSION = 1
    FLAG_TOMBSTONE = 0x01
    FLAG_EXPIRES = 0x02
    KNOWN_FLAGS = 0x03
    OFF_FLAGS = 1
    OFF_TIMESTAMP = 2
    OFF_EXPIRES = 10
    OFF_ORIGIN_LEN = 18
    OFF_ORIGIN = 19
    BUCKET_BITS = 16
    MAX_KEY_BYTES = 1024
