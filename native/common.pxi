# Declarations and inline helpers shared by the pieces _speedups.pyx includes.
from libc.stdint cimport uint8_t, uint64_t, int64_t


cdef inline uint64_t load_u64_be(const uint8_t* p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline void store_u64_be(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[7 - i] = <uint8_t>(v & 0xFF)
        v >>= 8


cdef inline uint64_t as_u64(object value, str name) except? 0:
    """``value`` as a uint64_t; a float is a TypeError, not silently truncated."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return <uint64_t>value  # OverflowError below 0 or above 2**64 - 1
