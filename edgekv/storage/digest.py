"""Anti-entropy digests: a two-level hash tree per placement, kept current.

Every record (tombstones and expired records included) contributes
``record_hash(key, record)`` to its key's bucket; a bucket's digest is the XOR
of its records' hashes, so replacing a version is two XORs and the tree is
maintained on every write and apply in the same WriteBatch, never rebuilt
(except when the placement rules change). 65,536 buckets form 256 segments
of 256; two nodes compare the 256 segment digests, then the buckets of
differing segments, then list only differing buckets, so a sync costs in proportion to the
difference, not the data.

Stored bytes (integers big-endian, see record.py):

* ``digest`` column family, the index that makes listing a bucket cheap:
  ``len(placement) | placement | bucket (u16) | key -> timestamp (u64) | origin``.
* ``meta`` column family, the bucket digests:
  ``digest/ | len(placement) | placement | bucket (u16) -> digest (u64)``, and the
  placement rules' fingerprint the index was built for.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterator, Sequence

from rocksdict import ColumnFamily, Rdict, RdictIter, WriteBatch

from edgekv import native
from edgekv.errors import InvalidArgument
from edgekv.storage.record import BUCKET_BITS, U16, U64, packed_version, unpack_version

DIGEST_CF = "digest"
BUCKETS = 1 << BUCKET_BITS
SEGMENTS = 256
BUCKETS_PER_SEGMENT = BUCKETS // SEGMENTS
META_PREFIX = b"digest/"
_META_PLACEMENT = b"placement_fingerprint"

# (placement, bucket) -> new bucket digest: staged in a WriteBatch, published after it.
Buckets = dict[tuple[bytes, int], int]


def placement_tag(placement: bytes) -> bytes:
    if len(placement) > 255:
        raise ValueError(f"placement prefix is {len(placement)} bytes; the limit is 255")
    return bytes((len(placement),)) + placement


def index_key(placement: bytes, bucket: int, key: bytes) -> bytes:
    return placement_tag(placement) + U16.pack(bucket) + key


def key_of_index_entry(ikey: bytes) -> bytes:
    """The user key of a digest-index key (``index_key``'s inverse, for the audit)."""
    return ikey[1 + ikey[0] + 2 :]  # len(placement) | placement | bucket (2) | key


def bucket_index_prefix(placement: bytes, bucket: int) -> bytes:
    return placement_tag(placement) + U16.pack(bucket)


def meta_key(placement: bytes, bucket: int) -> bytes:
    return META_PREFIX + placement_tag(placement) + U16.pack(bucket)


def parse_meta_key(raw: bytes) -> tuple[bytes, int]:
    """(placement, bucket) of a persisted bucket-digest key."""
    n = raw[len(META_PREFIX)]
    start = len(META_PREFIX) + 1
    return raw[start : start + n], U16.unpack_from(raw, start + n)[0]


class DigestTree:
    """Bucket and segment digests of one placement, in memory.

    Owned by a DigestIndex and changed only under the engine's write lock,
    after the WriteBatch carrying the same change has been written.
    """

    __slots__ = ("buckets", "segments")

    def __init__(self) -> None:
        self.buckets = array("Q", bytes(8 * BUCKETS))
        self.segments = array("Q", bytes(8 * SEGMENTS))

    def set_bucket(self, bucket: int, digest: int) -> None:
        old = self.buckets[bucket]
        self.buckets[bucket] = digest
        self.segments[bucket // BUCKETS_PER_SEGMENT] ^= old ^ digest

    def segment_digests(self) -> list[int]:
        return list(self.segments)

    def bucket_digests(self, segment: int) -> list[int]:
        start = segment * BUCKETS_PER_SEGMENT
        return list(self.buckets[start : start + BUCKETS_PER_SEGMENT])


class DigestIndex:
    """The digests of one engine's data: trees in memory, index and buckets on disk.

    Changes are staged into the engine's WriteBatch (``stage``,
    ``stage_removals``) and go live in memory only after that batch is written
    (``publish``), so a failed write changes nothing. The engine owns the
    column families and the write lock; staging and publishing run under that
    lock (the caller holds it), and the queries take it. Queries may run on any
    thread.
    """

    def __init__(
        self,
        data: Rdict,
        index: tuple[Rdict, ColumnFamily],
        meta: tuple[Rdict, ColumnFamily],
        *,
        lock: threading.Lock,
        write: Callable[[WriteBatch], None],
        check_open: Callable[[], None],
        placement_of: Callable[[bytes], bytes] | None,
        fingerprint: bytes,
    ) -> None:
        self._data = data
        self._index, self._index_handle = index  # (column family, handle): the engine's
        self._meta, self._meta_handle = meta
        self._lock = lock
        self._write = write
        self._check_open = check_open
        self._placement_of = placement_of or _global
        self._fingerprint = fingerprint
        self._trees: dict[bytes, DigestTree] = {}  # guarded by _lock
        self._tags: dict[bytes, bytes] = {}  # placement -> placement_tag, a cache

    def release(self) -> None:
        """Drop the column-family handles: they keep RocksDB (and its LOCK) open."""
        del self._index_handle, self._meta_handle

    # -- queries ----------------------------------------------------------------

    def segment_digests(self, placement: bytes) -> list[int]:
        """The 256 segment digests of a placement."""
        with self._lock:
            return self._tree(placement).segment_digests()

    def bucket_digests(self, placement: bytes, segment: int) -> list[int]:
        """The 256 bucket digests of one segment."""
        if not 0 <= segment < SEGMENTS:
            raise InvalidArgument(f"digest segment {segment} is out of range 0..{SEGMENTS - 1}")
        with self._lock:
            return self._tree(placement).bucket_digests(segment)

    def placements(self) -> list[bytes]:
        """Placements this node holds data of."""
        with self._lock:
            return sorted(self._trees)

    def list_bucket(self, placement: bytes, bucket: int) -> list[tuple[bytes, int, str]]:
        """(key, timestamp, origin) of every record in a bucket, in key order."""
        return list(self.iter_bucket(placement, bucket))

    def iter_bucket(
        self, placement: bytes, bucket: int, after: bytes = b""
    ) -> Iterator[tuple[bytes, int, str]]:
        """``list_bucket`` lazily, from the first key greater than ``after`` (b"": all)."""
        return self._walk(self._index.iter(), placement, bucket, after)

    def bucket_reader(
        self, placement: bytes
    ) -> Callable[[int, bytes], Iterator[tuple[bytes, int, str]]]:
        """``iter_bucket`` of ``placement`` for one listing: all calls share one iterator.

        Creating a RocksDB iterator costs about as much as walking a bucket;
        a listing walks hundreds. Each call's iterator is only valid until the
        next call (use them one after another, as paging.py does).
        """
        it = self._index.iter()

        def read(bucket: int, after: bytes = b"") -> Iterator[tuple[bytes, int, str]]:
            return self._walk(it, placement, bucket, after)

        return read

    @staticmethod
    def _walk(
        it: RdictIter, placement: bytes, bucket: int, after: bytes
    ) -> Iterator[tuple[bytes, int, str]]:
        if not 0 <= bucket < BUCKETS:
            raise InvalidArgument(f"bucket {bucket} is out of range 0..{BUCKETS - 1}")
        return _entries(it, bucket_index_prefix(placement, bucket), after)

    # -- staging (caller holds the engine's write lock) --------------------------

    def stage(
        self, wb: WriteBatch, changes: Sequence[tuple[bytes, bytes]], *, replacing: bool = True
    ) -> Buckets:
        """Stage the index entries and bucket digests of ``changes`` into ``wb``.

        Each (key, record) replaces the key's stored record, whose hash is
        XOR-ed out first (``replacing=False`` when rebuilding an empty index).
        Returns the new bucket digests for ``publish``.
        """
        record_hash = native.record_hash
        key_bucket = native.key_bucket
        placement_of = self._placement_of
        db_get = self._data.get
        index_handle = self._index_handle
        pack_bucket = U16.pack
        trees = self._trees
        tags = self._tags
        buckets: Buckets = {}
        latest: dict[bytes, bytes] = {}  # a key written twice in one write group
        for key, record in changes:
            placement = placement_of(key)
            bucket = key_bucket(key)
            slot = (placement, bucket)
            current = buckets.get(slot)
            if current is None:
                current = (trees.get(placement) or self._tree(placement)).buckets[bucket]
            previous = latest.get(key) or (db_get(key) if replacing else None)
            if previous is not None:
                current ^= record_hash(key, previous)
            buckets[slot] = current ^ record_hash(key, record)
            latest[key] = record
            tag = tags.get(placement) or self._tag(placement)
            wb.put(tag + pack_bucket(bucket) + key, packed_version(record), index_handle)
        for (placement, bucket), value in buckets.items():
            wb.put(meta_key(placement, bucket), U64.pack(value), self._meta_handle)
        return buckets

    def stage_removals(
        self, wb: WriteBatch, removals: Sequence[tuple[bytes, bytes]], buckets: Buckets
    ) -> None:
        """Stage removing each (key, stored record) from the index into ``wb``.

        Continues from the digests already staged in ``buckets`` and updates it
        in place. The data itself is the caller's to delete.
        """
        if not removals:
            return
        record_hash = native.record_hash
        key_bucket = native.key_bucket
        touched: set[tuple[bytes, int]] = set()
        for key, stored in removals:
            placement = self._placement_of(key)
            bucket = key_bucket(key)
            slot = (placement, bucket)
            current = buckets.get(slot)
            if current is None:
                current = self._tree(placement).buckets[bucket]
            buckets[slot] = current ^ record_hash(key, stored)
            touched.add(slot)
            wb.delete(index_key(placement, bucket, key), self._index_handle)
        for placement, bucket in touched:
            wb.put(
                meta_key(placement, bucket),
                U64.pack(buckets[(placement, bucket)]),
                self._meta_handle,
            )

    def publish(self, buckets: Buckets) -> None:
        """Make staged bucket digests live, once their WriteBatch is written."""
        for (placement, bucket), value in buckets.items():
            self._tree(placement).set_bucket(bucket, value)

    def _tag(self, placement: bytes) -> bytes:
        tag = self._tags[placement] = placement_tag(placement)
        return tag

    def _tree(self, placement: bytes) -> DigestTree:
        tree = self._trees.get(placement)
        if tree is None:
            tree = self._trees[placement] = DigestTree()
        return tree

    # -- loading and rebuilding --------------------------------------------------

    def load(self) -> None:
        """Read the bucket digests from ``meta``; rebuild when the rules changed.

        Called once, while the engine opens (no other thread can see it yet).
        """
        fingerprint = self._meta.get(_META_PLACEMENT)
        if fingerprint is not None and fingerprint != self._fingerprint:
            self.rebuild()
            return
        if fingerprint is None:
            if _first_key(self._data) is not None:  # data from before digests existed
                self.rebuild()
                return
            self._meta.put(_META_PLACEMENT, self._fingerprint)
        it = self._meta.iter()
        it.seek(META_PREFIX)
        while it.valid():
            raw = it.key()
            if not raw.startswith(META_PREFIX):
                break
            placement, bucket = parse_meta_key(raw)
            self._tree(placement).set_bucket(bucket, int(U64.unpack(it.value())[0]))
            it.next()

    def rebuild(self) -> None:
        """Recompute the index and trees from the data (placement rules changed).

        Holds the engine's write lock throughout: writes wait until it is done.
        """
        with self._lock:
            self._check_open()
            while (first := _first_key(self._index)) is not None:
                wb = WriteBatch(raw_mode=True)
                it = self._index.iter()
                it.seek(first)
                for _ in range(10_000):
                    if not it.valid():
                        break
                    wb.delete(it.key(), self._index_handle)
                    it.next()
                self._write(wb)
            self._meta.delete_range(META_PREFIX, META_PREFIX[:-1] + b"0")
            self._trees.clear()
            it = self._data.iter()
            it.seek_to_first()
            batch: list[tuple[bytes, bytes]] = []
            while True:
                valid = it.valid()
                if valid:
                    batch.append((it.key(), it.value()))
                    it.next()
                if len(batch) >= 1000 or (not valid and batch):
                    wb = WriteBatch(raw_mode=True)
                    # The index is empty, so no previous version may be XOR-ed out.
                    buckets = self.stage(wb, batch, replacing=False)
                    self._write(wb)
                    self.publish(buckets)
                    batch = []
                if not valid:
                    break
            self._meta.put(_META_PLACEMENT, self._fingerprint)


def _global(key: bytes) -> bytes:
    return b""  # no placement rules: one placement


def _first_key(cf: Rdict) -> bytes | None:
    it = cf.iter()
    it.seek_to_first()
    return it.key() if it.valid() else None


def _entries(it: RdictIter, prefix: bytes, after: bytes) -> Iterator[tuple[bytes, int, str]]:
    """(key, timestamp, origin) of the index entries under ``prefix``, after ``after``."""
    # Keys are at least one byte, so the successor of ``after`` is after + b"\x00".
    it.seek(prefix + after + b"\x00" if after else prefix)
    n = len(prefix)
    while it.valid():
        ikey = it.key()
        if not ikey.startswith(prefix):
            break
        timestamp, origin = unpack_version(it.value())
        yield ikey[n:], timestamp, origin
        it.next()
