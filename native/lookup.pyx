# The read hot path: fetch from RocksDB, drop tombstones and expired records,
# return (value, timestamp, origin, expires_at_ms) without a Python frame between.


cdef inline int check_key(bytes key) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(key)
    if n == 0:
        raise InvalidArgument("key is empty; keys are 1 to 1024 bytes")
    if n > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {n} bytes; the limit is {MAX_KEY_BYTES}")
    return 0


cdef object live_item(object raw, int64_t now_ms):
    """(value, timestamp, origin, expires_at_ms) of a record, or None if it reads as absent."""
    if type(raw) is not bytes:
        raise CorruptRecord(f"stored record is {type(raw).__name__}, not bytes")
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef int off = check_header(p, n)
    cdef uint8_t flags = p[OFF_FLAGS]
    cdef uint64_t expires_at_ms = 0
    if flags & FLAG_TOMBSTONE:
        return None
    if flags & FLAG_EXPIRES:
        expires_at_ms = load_u64_be(p + OFF_EXPIRES)
        if now_ms < 0:
            now_ms = wall_ms()
        if expires_at_ms <= <uint64_t>now_ms:
            return None
    return (
        PyBytes_FromStringAndSize(<const char*>p + off, n - off),
        load_u64_be(p + OFF_TIMESTAMP),
        PyUnicode_DecodeASCII(<const char*>p + OFF_ORIGIN, off - OFF_ORIGIN, NULL),
        expires_at_ms,
    )


cdef class Reader:
    """Point reads and scans of one data column family.

    ``get`` is the column family's bound ``Rdict.get`` (raw mode): it takes a key
    or a list of keys. ``now_ms`` < 0 means "read the wall clock"; tests pass a
    fixed time. Safe to call from several threads: it holds no mutable state.
    """

    cdef object _get  # bound Rdict.get; owned by the Engine, which outlives us

    def __init__(self, get):
        self._get = get

    def rebind(self, get):
        """Read through ``get`` from now on (the engine reopened its database)."""
        self._get = get

    def get(self, bytes key not None, int64_t now_ms=-1):
        """The live item under ``key``, or None (absent, deleted or expired)."""
        check_key(key)
        raw = self._get(key)
        if raw is None:
            return None
        return live_item(raw, now_ms)

    def get_many(self, list keys not None, int64_t now_ms=-1):
        """``get`` for each key, in order, through one RocksDB multi-get."""
        cdef Py_ssize_t i, count = len(keys)
        cdef list out, raws
        for i in range(count):
            key = keys[i]
            if type(key) is not bytes:
                raise InvalidArgument(f"keys[{i}] must be bytes, got {type(key).__name__}")
            check_key(key)
        if now_ms < 0:
            now_ms = wall_ms()  # one clock read for the whole batch
        raws = self._get(keys)
        if len(raws) != count:  # indexing below is unchecked: never trust the length
            raise StorageError(f"multi-get returned {len(raws)} results for {count} keys")
        out = [None] * count
        for i in range(count):
            raw = raws[i]
            if raw is not None:
                out[i] = live_item(raw, now_ms)
        return out

    def scan(self, it, bytes start not None, bytes end not None, Py_ssize_t limit,
             Py_ssize_t max_examined=0, int64_t now_ms=-1):
        """Live items with start <= key < end (``end`` empty = no bound), in key order.

        ``it`` is a fresh RdictIter of the data column family. Returns
        ``(items, next_key)``: items are (key, value, timestamp, origin,
        expires_at_ms); ``next_key`` is the last key looked at when more may
        follow, else None. At most ``max_examined`` records are read (0 = no cap),
        so a run of tombstones cannot make one page unbounded work.
        """
        cdef list items = []
        cdef Py_ssize_t examined = 0
        cdef bint bounded = PyBytes_GET_SIZE(end) > 0
        cdef object key = None
        cdef object last = None
        if limit < 1:
            raise InvalidArgument(f"scan limit is {limit}; it must be at least 1")
        if now_ms < 0:
            now_ms = wall_ms()
        it.seek(start)
        while it.valid():
            key = it.key()
            if bounded and key >= end:
                return items, None
            if len(items) >= limit or (max_examined and examined >= max_examined):
                return items, last
            item = live_item(it.value(), now_ms)
            examined += 1
            if item is not None:
                items.append((key,) + <tuple>item)
            last = key
            it.next()
        return items, None
