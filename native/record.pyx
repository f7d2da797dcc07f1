# Record encoding and decoding (layout: edgekv/storage/record.py).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME


cdef inline int64_t wall_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef int check_header(const uint8_t* p, Py_ssize_t n) except -1:
    """Validate the fixed header; return the value offset, or raise CorruptRecord."""
    cdef Py_ssize_t origin_len, i
    if n < OFF_ORIGIN + 1:
        raise CorruptRecord(f"record is {n} bytes; a record is at least {OFF_ORIGIN + 1}")
    if p[0] != FORMAT_VERSION:
        raise CorruptRecord(f"record format version {p[0]} is not supported (this build reads 1)")
    if p[OFF_FLAGS] & ~KNOWN_FLAGS:
        raise CorruptRecord(f"record flags 0x{p[OFF_FLAGS]:02x} have unknown bits")
    origin_len = p[OFF_ORIGIN_LEN]
    if origin_len == 0:
        raise CorruptRecord("record origin id is empty")
    if OFF_ORIGIN + origin_len > n:
        raise CorruptRecord(
            f"record origin id needs {origin_len} bytes but only {n - OFF_ORIGIN} remain")
    for i in range(OFF_ORIGIN, OFF_ORIGIN + origin_len):
        if p[i] & 0x80:  # node ids are ASCII: decoding the origin below cannot fail
            raise CorruptRecord("record origin id is not ASCII")
    if (p[OFF_FLAGS] & FLAG_TOMBSTONE) and OFF_ORIGIN + origin_len != n:
        raise CorruptRecord("tombstone record carries value bytes")
    return OFF_ORIGIN + <int>origin_len


def decode_record(bytes buf not None):
    """Decode a record into (tombstone, timestamp, expires_at_ms, origin, value).

    Raises CorruptRecord for bytes that are not a record of a known format version.
    """
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef int off = check_header(p, n)
    return (
        (p[OFF_FLAGS] & FLAG_TOMBSTONE) != 0,
        load_u64_be(p + OFF_TIMESTAMP),
        load_u64_be(p + OFF_EXPIRES),
        PyUnicode_DecodeASCII(<const char*>p + OFF_ORIGIN, off - OFF_ORIGIN, NULL),
        PyBytes_FromStringAndSize(<const char*>p + off, n - off),
    )


def record_version(bytes buf not None):
    """The (timestamp, origin) of a record without copying its value."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf)
    cdef int off = check_header(p, PyBytes_GET_SIZE(buf))
    return (load_u64_be(p + OFF_TIMESTAMP),
            PyUnicode_DecodeASCII(<const char*>p + OFF_ORIGIN, off - OFF_ORIGIN, NULL))


def encode_record(bint tombstone, object timestamp, object expires_at_ms,
                  bytes origin not None, bytes value not None):
    """Encode a record; ``origin`` is the ASCII node id (1..255 bytes).

    A tombstone must have an empty value. Raises InvalidArgument otherwise.
    """
    cdef uint64_t ts = as_u64(timestamp, "timestamp")
    cdef uint64_t expires = as_u64(expires_at_ms, "expires_at_ms")
    cdef Py_ssize_t origin_len = PyBytes_GET_SIZE(origin)
    cdef Py_ssize_t value_len = PyBytes_GET_SIZE(value)
    cdef const uint8_t* o = <const uint8_t*>PyBytes_AS_STRING(origin)
    cdef uint8_t flags = 0
    cdef bytes out
    cdef uint8_t* p
    cdef Py_ssize_t i
    if origin_len < 1 or origin_len > 255:
        raise InvalidArgument(f"origin id is {origin_len} bytes; it must be 1 to 255")
    for i in range(origin_len):
        if o[i] & 0x80:
            raise InvalidArgument(f"origin id {origin!r} is not ASCII")
    if tombstone:
        if value_len:
            raise InvalidArgument("a tombstone has no value")
        flags |= FLAG_TOMBSTONE
    if expires:
        flags |= FLAG_EXPIRES
    # Own the new bytes object until it is returned: filling it in place is safe
    # because nobody else can see it yet.
    out = PyBytes_FromStringAndSize(NULL, OFF_ORIGIN + origin_len + value_len)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    p[0] = FORMAT_VERSION
    p[OFF_FLAGS] = flags
    store_u64_be(p + OFF_TIMESTAMP, ts)
    store_u64_be(p + OFF_EXPIRES, expires)
    p[OFF_ORIGIN_LEN] = <uint8_t>origin_len
    memcpy(p + OFF_ORIGIN, PyBytes_AS_STRING(origin), origin_len)
    if value_len:
        memcpy(p + OFF_ORIGIN + origin_len, PyBytes_AS_STRING(value), value_len)
    return out
