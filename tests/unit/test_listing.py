"""Listings in steps: the same pages as paging.py, with the loop free between steps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv.replication.listing import (
    STEP_BUCKETS,
    STEP_ENTRIES,
    bucket_page_in_steps,
    listing_answer,
    page_range_in_steps,
)
from edgekv.replication.paging import BucketPage, Listed, bucket_page, page_range
from edgekv.storage.engine import Engine, PutOp

BUCKETS = list(range(3, 3 + 5 * STEP_BUCKETS + 7))  # several steps and a part


def _contents(seed: int) -> dict[int, list[bytes]]:
    rnd = random.Random(seed)
    return {
        b: sorted(b"%04d/%03d" % (b, i) for i in range(rnd.choice((0, 0, 1, 3, 12))))
        for b in BUCKETS
    }


def _iter(contents: dict[int, list[bytes]]) -> Callable[[int, bytes], Iterator[Listed]]:
    def iter_bucket(bucket: int, after: bytes) -> Iterator[Listed]:
        for key in contents.get(bucket, []):
            if key > after:
                yield key, 1, "n"

    return iter_bucket


@pytest.mark.parametrize("budget", [1, 200, 2_000, 10_000, 1_000_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_pages_in_steps_equal_the_pages_in_one_go(budget: int, seed: int) -> None:
    contents = _contents(seed)
    ours = _contents(seed + 100)  # the other side holds other keys in the same buckets
    iter_bucket, iter_ours = _iter(contents), _iter(ours)
    buckets, after = BUCKETS, b""
    pages = 0
    while True:
        page = await bucket_page_in_steps(iter_bucket, buckets, after, budget)
        expected = bucket_page(iter_bucket, buckets, after, budget)
        assert (page.entries, page.truncated, page.resume_index, page.resume_after_key) == (
            expected.entries,
            expected.truncated,
            expected.resume_index,
            expected.resume_after_key,
        )
        assert await page_range_in_steps(iter_ours, buckets, after, page) == page_range(
            iter_ours, buckets, after, page
        )
        pages += 1
        if not page.truncated:
            break
        buckets, after = buckets[page.resume_index :], page.resume_after_key
    assert pages > 1 or budget == 1_000_000


async def test_a_listing_lets_the_loop_run_between_steps() -> None:
    iter_bucket = _iter(_contents(7))
    steps = 0
    done = asyncio.Event()

    async def count() -> None:
        nonlocal steps
        while not done.is_set():
            steps += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = steps
    page = await bucket_page_in_steps(iter_bucket, BUCKETS, b"", 1_000_000)
    mid = steps
    await page_range_in_steps(iter_bucket, BUCKETS, b"", page)
    listed = [(b"k%05d" % i, i, "n") for i in range(1000)]
    answer = await listing_answer(BucketPage(listed, True, 3, b"x"))
    done.set()
    await counter
    assert mid - before >= len(BUCKETS) // STEP_BUCKETS  # the loop ran between the steps
    assert steps - mid >= len(BUCKETS) // STEP_BUCKETS + 1000 // STEP_ENTRIES
    assert [e.key for e in answer.entries] == [b"k%05d" % i for i in range(1000)]
    assert (answer.truncated, answer.resume_index, answer.resume_after_key) == (True, 3, b"x")


def test_bucket_reader_lists_what_iter_bucket_lists(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "node-a")
    try:
        for start in range(0, 30_000, 1000):
            engine.write([PutOp(b"k%05d" % i, b"v") for i in range(start, start + 1000)])
        digests = engine.digests
        read = digests.bucket_reader(b"")
        listed = 0
        for bucket in [*range(0, 65_536, 13), 65_535]:
            expected = digests.list_bucket(b"", bucket)
            assert list(read(bucket, b"")) == expected
            if expected:
                assert list(read(bucket, expected[0][0])) == expected[1:]
            listed += len(expected)
        assert listed > 1000
    finally:
        engine.close()
