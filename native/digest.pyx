# Anti-entropy hashing (the tree: edgekv/storage/digest.py; BUCKET_BITS: consts.pxi).
# Deterministic on every node and platform: FNV-1a 64 over the bytes, finished with
# murmur3's fmix64.

cdef enum:
    FNV_OFFSET = 0xcbf29ce484222325


cdef inline uint64_t fnv1a(uint64_t h, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        h ^= p[i]
        h *= <uint64_t>0x100000001b3
    return h


cdef inline uint64_t fmix64(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    k *= <uint64_t>0xc4ceb9fe1a85ec53
    k ^= k >> 33
    return k


def key_bucket(bytes key not None):
    """The digest bucket (0..65535) of a key; it never changes with the version."""
    cdef uint64_t h = fnv1a(<uint64_t>FNV_OFFSET, <const uint8_t*>PyBytes_AS_STRING(key),
                            PyBytes_GET_SIZE(key))
    return <int>(fmix64(h) >> (64 - BUCKET_BITS))


def version_hash(bytes key not None, object timestamp, bytes origin not None):
    """64-bit hash of (key, version): XOR-ed into the key's bucket digest."""
    cdef uint8_t ts[8]
    store_u64_be(ts, as_u64(timestamp, "timestamp"))
    cdef uint64_t h = fnv1a(<uint64_t>FNV_OFFSET, <const uint8_t*>PyBytes_AS_STRING(key),
                            PyBytes_GET_SIZE(key))
    h = fnv1a(h ^ 0xff, ts, 8)
    h = fnv1a(h, <const uint8_t*>PyBytes_AS_STRING(origin), PyBytes_GET_SIZE(origin))
    return fmix64(h)


def record_hash(bytes key not None, bytes record not None):
    """``version_hash`` of a stored record's version, read straight from its header."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(record)
    cdef int off = check_header(p, PyBytes_GET_SIZE(record))
    cdef uint64_t h = fnv1a(<uint64_t>FNV_OFFSET, <const uint8_t*>PyBytes_AS_STRING(key),
                            PyBytes_GET_SIZE(key))
    h = fnv1a(h ^ 0xff, p + OFF_TIMESTAMP, 8)
    h = fnv1a(h, p + OFF_ORIGIN, off - OFF_ORIGIN)
    return fmix64(h)
