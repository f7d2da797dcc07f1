# KV.Stream's most common operation on the wire, without protobuf objects: a LOCAL
# get in (StreamRequest) and its answer out (StreamResponse). Field numbers are
# edgekv/v1/kv.proto's; anything else is left to protobuf (the caller decodes it).
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

cdef enum:
    TAG_ID = 0x08          # StreamRequest/StreamResponse.id = 1, varint
    TAG_TIMEOUT_MS = 0x10  # StreamRequest.timeout_ms = 2, varint
    TAG_REQ_GET = 0x1a     # StreamRequest.get = 3, length-delimited
    TAG_KEY = 0x0a         # GetRequest.key = 1, length-delimited
    TAG_ANS_GET = 0x12     # StreamResponse.get = 2, length-delimited
    TAG_FOUND = 0x08       # GetResponse.found = 1, varint
    TAG_VALUE = 0x12       # GetResponse.value = 2
    TAG_VERSION = 0x1a     # GetResponse.version = 3
    TAG_SERVED_BY = 0x22   # GetResponse.served_by = 4
    TAG_EXPIRES = 0x28     # GetResponse.expires_at_ms = 5, varint
    TAG_TIMESTAMP = 0x08   # Version.timestamp = 1, varint
    TAG_ORIGIN = 0x12      # Version.origin = 2


cdef inline Py_ssize_t read_varint(const uint8_t* p, Py_ssize_t i, Py_ssize_t end,
                                   uint64_t* out) noexcept nogil:
    """The varint at p[i:end] into out; the offset after it, or -1 (truncated, > 10 bytes)."""
    cdef uint64_t v = 0
    cdef int shift = 0
    while i < end and shift < 64:
        v |= <uint64_t>(p[i] & 0x7F) << shift
        if p[i] < 0x80:
            out[0] = v
            return i + 1
        i += 1
        shift += 7
    return -1


cdef inline Py_ssize_t read_size(const uint8_t* p, Py_ssize_t i, Py_ssize_t end,
                                 uint64_t* out) noexcept nogil:
    """A length prefix: a varint of at most 5 bytes, minimal, under 2**31 (what every
    encoder writes); -1 for anything else, which protobuf may judge otherwise."""
    cdef Py_ssize_t after = read_varint(p, i, end if end - i <= 5 else i + 5, out)
    if after < 0 or out[0] > 0x7FFFFFFF or (after - i > 1 and p[after - 1] == 0):
        return -1
    return after


cdef inline Py_ssize_t varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline Py_ssize_t write_varint(char* o, uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        o[n] = <char>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    o[n] = <char>v
    return n + 1


cdef inline Py_ssize_t write_bytes(char* o, uint8_t tag, const char* data,
                                   Py_ssize_t n) noexcept nogil:
    o[0] = <char>tag
    cdef Py_ssize_t k = 1 + write_varint(o + 1, <uint64_t>n)
    memcpy(o + k, data, n)
    return k + n


def stream_plain_get(bytes raw not None):
    """``(id, timeout_ms, key)`` if ``raw`` is a StreamRequest whose operation is a get
    that sets only its key (a LOCAL read), each field once and no other field; None
    for anything else, which the caller decodes with protobuf."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0, get_end, key_at = -1, key_len = 0
    cdef uint64_t tag, length, request_id = 0, timeout_ms = 0
    cdef int seen = 0  # bit 1: id, 2: timeout_ms, 4: get
    while i < n:
        tag = p[i]  # every tag here is one byte; a longer one (padded) is protobuf's to judge
        i += 1
        if tag == TAG_ID and not seen & 1:
            seen |= 1
            i = read_varint(p, i, n, &request_id)
        elif tag == TAG_TIMEOUT_MS and not seen & 2:
            seen |= 2
            i = read_varint(p, i, n, &timeout_ms)
            if timeout_ms > 0xFFFFFFFF:  # protobuf keeps the low 32 bits: its call
                return None
        elif tag == TAG_REQ_GET and not seen & 4:
            seen |= 4
            i = read_size(p, i, n, &length)
            if i < 0 or length > <uint64_t>(n - i):
                return None
            get_end = i + <Py_ssize_t>length
            if i == get_end or p[i] != TAG_KEY:  # the key, alone in the GetRequest
                return None
            i = read_size(p, i + 1, get_end, &length)
            if i < 0 or length != <uint64_t>(get_end - i):
                return None
            key_at, key_len, i = i, <Py_ssize_t>length, get_end
        else:
            return None
        if i < 0:
            return None
    if key_at < 0:
        return None
    return request_id, timeout_ms, PyBytes_FromStringAndSize(<const char*>p + key_at, key_len)


def stream_get_answer(object request_id, object found, str served_by not None):
    """The StreamResponse answering get ``request_id`` with ``found`` ((value, timestamp,
    origin, expires_at_ms) or None: not found) read on node ``served_by``: the bytes
    protobuf writes for the message KVMessages.get_now fills."""
    cdef uint64_t rid = as_u64(request_id, "request_id"), timestamp = 0, expires_at_ms = 0
    cdef Py_ssize_t served_len, origin_len = 0, value_len = 0, version_len = 0
    cdef Py_ssize_t get_len = 0, total, k = 0
    cdef const char* served = PyUnicode_AsUTF8AndSize(served_by, &served_len)
    cdef const char* origin_p = NULL
    cdef const char* value_p = NULL
    if found is not None:
        value, timestamp_o, origin, expires_o = found
        if type(value) is not bytes or type(origin) is not str:
            raise TypeError(
                f"found must be (bytes, int, str, int), got ({type(value).__name__}, "
                f"{type(timestamp_o).__name__}, {type(origin).__name__}, "
                f"{type(expires_o).__name__})"
            )
        timestamp = as_u64(timestamp_o, "timestamp")
        expires_at_ms = as_u64(expires_o, "expires_at_ms")
        value_p, value_len = PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)
        origin_p = PyUnicode_AsUTF8AndSize(origin, &origin_len)
        if timestamp:
            version_len += 1 + varint_size(timestamp)
        if origin_len:
            version_len += 1 + varint_size(<uint64_t>origin_len) + origin_len
        get_len += 2 + 1 + varint_size(<uint64_t>version_len) + version_len
        if value_len:
            get_len += 1 + varint_size(<uint64_t>value_len) + value_len
        if expires_at_ms:
            get_len += 1 + varint_size(expires_at_ms)
    if served_len:
        get_len += 1 + varint_size(<uint64_t>served_len) + served_len
    total = 1 + varint_size(<uint64_t>get_len) + get_len
    if rid:
        total += 1 + varint_size(rid)
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* o = PyBytes_AS_STRING(out)
    if rid:
        o[0] = TAG_ID
        k = 1 + write_varint(o + 1, rid)
    o[k] = TAG_ANS_GET
    k += 1 + write_varint(o + k + 1, <uint64_t>get_len)
    if found is not None:
        o[k] = TAG_FOUND
        o[k + 1] = 1
        k += 2
        if value_len:
            k += write_bytes(o + k, TAG_VALUE, value_p, value_len)
        o[k] = TAG_VERSION
        k += 1 + write_varint(o + k + 1, <uint64_t>version_len)
        if timestamp:
            o[k] = TAG_TIMESTAMP
            k += 1 + write_varint(o + k + 1, timestamp)
        if origin_len:
            k += write_bytes(o + k, TAG_ORIGIN, origin_p, origin_len)
    if served_len:
        k += write_bytes(o + k, TAG_SERVED_BY, served, served_len)
    if expires_at_ms:
        o[k] = TAG_EXPIRES
        k += 1 + write_varint(o + k + 1, expires_at_ms)
    if k != total:  # a sizing bug would write past the buffer: never let it pass
        raise AssertionError(f"stream_get_answer wrote {k} bytes of {total}")
    return out
