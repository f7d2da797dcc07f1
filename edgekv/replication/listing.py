"""Bucket listings of anti-entropy, computed on the event loop in short steps.

A listing page covers up to 512 digest buckets; walking them in one go held
the loop 1.5-4 ms per page on each side of a sync (measured: one RocksDB
iterator per bucket, ~2 us per bucket before any entry, ~1 us per entry,
and ~1.3 us per entry to build the answer), so reads at a node being
repaired queued behind every page. Here the same pages (paging.py's
``bucket_page`` and ``page_range``, same entries, same resume points) are
computed ``STEP_BUCKETS`` buckets at a time, yielding to the loop between
steps, with one iterator per listing (``DigestIndex.bucket_reader``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from edgekv.replication.paging import BucketPage, Listed, bucket_page, listing_cost, page_range
from edgekv.v1 import replication_pb2

# Buckets walked per step: about 0.1 ms of the loop (empty buckets cost
# ~1.2 us each, listed entries ~1 us).
STEP_BUCKETS = 16
# Listed entries turned into protobuf messages per step (~0.15 ms).
STEP_ENTRIES = 128

IterBucket = Callable[[int, bytes], Iterable[Listed]]


async def bucket_page_in_steps(
    iter_bucket: IterBucket, buckets: Sequence[int], after_key: bytes, max_bytes: int
) -> BucketPage:
    """``bucket_page(iter_bucket, buckets, after_key, max_bytes)``, yielding between steps."""
    entries: list[Listed] = []
    size = 0
    for start in range(0, len(buckets), STEP_BUCKETS):
        if start:
            await asyncio.sleep(0)
        after = after_key if start == 0 else b""
        step = buckets[start : start + STEP_BUCKETS]
        part = bucket_page(iter_bucket, step, after, max_bytes - size, page_holds=len(entries))
        entries += part.entries
        size += sum(listing_cost(e) for e in part.entries)
        if part.truncated:
            return BucketPage(entries, True, start + part.resume_index, part.resume_after_key)
    return BucketPage(entries, False, len(buckets), b"")


async def page_range_in_steps(
    iter_bucket: IterBucket, buckets: Sequence[int], after_key: bytes, page: BucketPage
) -> list[Listed]:
    """``page_range(iter_bucket, buckets, after_key, page)``, yielding between steps."""
    out: list[Listed] = []
    whole = page.resume_index  # buckets[:whole] are covered whole (the first from after_key)
    for start in range(0, whole, STEP_BUCKETS):
        if start:
            await asyncio.sleep(0)
        step = buckets[start : min(whole, start + STEP_BUCKETS)]
        after = after_key if start == 0 else b""
        out += page_range(iter_bucket, step, after, BucketPage([], False, len(step), b""))
    if page.truncated and page.resume_after_key:
        if whole:
            await asyncio.sleep(0)
        after = after_key if whole == 0 else b""
        out += page_range(
            iter_bucket, buckets[whole:], after, BucketPage([], True, 0, page.resume_after_key)
        )
    return out


async def listing_answer(page: BucketPage) -> replication_pb2.ListBucketsResponse:
    """The ListBuckets answer of ``page``, built ``STEP_ENTRIES`` entries per step."""
    answer = replication_pb2.ListBucketsResponse(
        truncated=page.truncated,
        resume_index=page.resume_index if page.truncated else 0,
        resume_after_key=page.resume_after_key,
    )
    entries = page.entries
    for start in range(0, len(entries), STEP_ENTRIES):
        if start:
            await asyncio.sleep(0)
        answer.entries.extend(
            replication_pb2.KeyVersion(key=key, timestamp=ts, origin=origin)
            for key, ts, origin in entries[start : start + STEP_ENTRIES]
        )
    return answer
