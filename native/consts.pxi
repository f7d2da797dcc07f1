# Mirrors edgekv/storage/record.py: change both together. tests/parity checks
# that the compiled module reports the same numbers (RECORD_LAYOUT).
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
    MAX_KEY_BYTES = 1024
