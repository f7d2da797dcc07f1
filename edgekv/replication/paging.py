"""Byte-bounded pages for the peer plane: anti-entropy listings and record batches.

Every anti-entropy message (ListBuckets and FetchRecords answers, PushRecords
requests) is cut at a byte budget, so values of any size up to
``max_value_bytes`` move at any count: a page always holds at least one entry,
so paging always progresses, and otherwise stays within the budget. The budget
is the node's client message limit, a quarter of what the peer port accepts
(server/channels.py), so a page never meets the gRPC message limit.

Pure functions over callables that read the engine: no I/O of their own, no
event loop, so they are tested on their own and shared by both sides of a sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

# Protobuf framing of one repeated entry (tags, lengths, seq or version fields),
# counted on top of its key and record bytes; generous on purpose.
ENTRY_OVERHEAD_BYTES = 32
# Keys read per RocksDB multi-get while filling a page, before the average
# record size is known; later reads are sized by that average.
_FIRST_READ_KEYS = 16
_MAX_READ_KEYS = 256

Record = tuple[bytes, bytes]  # (key, stored record bytes)
Listed = tuple[bytes, int, str]  # (key, timestamp, origin)


def record_cost(key: bytes, record: bytes) -> int:
    """Bytes one (key, record) adds to a message, framing included."""
    return len(key) + len(record) + ENTRY_OVERHEAD_BYTES


def listing_cost(entry: Listed) -> int:
    """Bytes one listed (key, timestamp, origin) adds to a message, framing included."""
    return len(entry[0]) + len(entry[2]) + ENTRY_OVERHEAD_BYTES


def record_page(
    read: Callable[[Sequence[bytes]], list[Record]],
    keys: Sequence[bytes],
    start: int,
    max_bytes: int,
) -> tuple[list[Record], int]:
    """Records of ``keys[start:]`` up to ``max_bytes``; returns them and where to resume.

    ``read(keys)`` returns (key, record) for each present key, in order (as
    ``Engine.records``). The page holds at least one record when any key from
    ``start`` on is present; the returned index is the first key not looked at
    (``len(keys)`` when all were). Keys are read in small multi-gets sized by
    the records seen so far, so a page of huge values never reads far past its
    budget.
    """
    page: list[Record] = []
    size = 0
    i = start
    step = _FIRST_READ_KEYS
    n = len(keys)
    while i < n:
        chunk = keys[i : i + step]
        found = read(chunk)
        j = 0  # next unmatched entry of ``found`` (in chunk order; absent keys skipped)
        for pos, key in enumerate(chunk):
            if j < len(found) and found[j][0] == key:
                record = found[j][1]
                j += 1
                cost = record_cost(key, record)
                if page and size + cost > max_bytes:
                    return page, i + pos
                page.append((key, record))
                size += cost
        i += len(chunk)
        if page:
            average = max(1, size // len(page))
            step = max(1, min(_MAX_READ_KEYS, (max_bytes - size) // average + 1))
    return page, n


def record_batches(
    records: Iterable[Record], max_bytes: int, max_records: int = 0
) -> Iterable[list[Record]]:
    """``records`` cut into batches of at most ``max_bytes`` (a bigger record goes alone)
    and, when ``max_records`` > 0, at most ``max_records`` records."""
    batch: list[Record] = []
    size = 0
    for key, record in records:
        cost = record_cost(key, record)
        if batch and (size + cost > max_bytes or len(batch) == max_records):
            yield batch
            batch, size = [], 0
        batch.append((key, record))
        size += cost
    if batch:
        yield batch


def key_batches(keys: Sequence[bytes], max_keys: int, max_bytes: int) -> Iterable[Sequence[bytes]]:
    """``keys`` cut into runs of at most ``max_keys`` keys and about ``max_bytes`` bytes."""
    start = 0
    size = 0
    for i, key in enumerate(keys):
        cost = len(key) + ENTRY_OVERHEAD_BYTES
        if i > start and (i - start >= max_keys or size + cost > max_bytes):
            yield keys[start:i]
            start, size = i, 0
        size += cost
    if start < len(keys):
        yield keys[start:]


class BucketPage:
    """One byte-bounded page of a bucket listing (the ListBuckets answer, in plain values).

    ``entries`` cover ``buckets[:resume_index]`` whole when ``truncated`` is
    False; when it is True, they cover ``buckets[:resume_index]`` and the keys
    of ``buckets[resume_index]`` up to ``resume_after_key`` (none if empty).
    """

    __slots__ = ("entries", "resume_after_key", "resume_index", "truncated")

    def __init__(
        self, entries: list[Listed], truncated: bool, resume_index: int, resume_after_key: bytes
    ) -> None:
        self.entries = entries
        self.truncated = truncated
        self.resume_index = resume_index
        self.resume_after_key = resume_after_key


def bucket_page(
    iter_bucket: Callable[[int, bytes], Iterable[Listed]],
    buckets: Sequence[int],
    after_key: bytes,
    max_bytes: int,
    *,
    page_holds: int = 0,
) -> BucketPage:
    """List ``buckets`` (the first from after ``after_key``) up to ``max_bytes``.

    ``iter_bucket(bucket, after)`` yields a bucket's (key, timestamp, origin)
    in key order from the first key greater than ``after``. At least one entry
    is listed when any exists, so paging with the answer's resume point always
    progresses; ``page_holds`` > 0 says the page already holds entries (this
    call continues it, listing.py), so none is forced in past ``max_bytes``.
    """
    entries: list[Listed] = []
    size = 0
    for index, bucket in enumerate(buckets):
        last = b""
        for entry in iter_bucket(bucket, after_key if index == 0 else b""):
            cost = listing_cost(entry)
            if (entries or page_holds) and size + cost > max_bytes:
                resume_after = last or (after_key if index == 0 else b"")
                return BucketPage(entries, True, index, resume_after)
            entries.append(entry)
            size += cost
            last = entry[0]
    return BucketPage(entries, False, len(buckets), b"")


def page_range(
    iter_bucket: Callable[[int, bytes], Iterable[Listed]],
    buckets: Sequence[int],
    after_key: bytes,
    page: BucketPage,
) -> list[Listed]:
    """This node's entries in the key range a peer's ``page`` covers (same rules)."""
    out: list[Listed] = []
    for index in range(page.resume_index):
        out += iter_bucket(buckets[index], after_key if index == 0 else b"")
    if page.truncated and page.resume_after_key:
        index = page.resume_index
        for entry in iter_bucket(buckets[index], after_key if index == 0 else b""):
            if entry[0] > page.resume_after_key:
                break
            out.append(entry)
    return out
