"""Byte-bounded peer pages: every page fits its budget, and paging always progresses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edgekv.replication.paging import (
    BucketPage,
    bucket_page,
    key_batches,
    page_range,
    record_batches,
    record_cost,
    record_page,
)
from edgekv.replication.sender import take_batch
from edgekv.storage.engine import Engine, PutOp


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "db", "node-a")
    yield eng
    eng.close()


def _all_pages(engine: Engine, keys: Sequence[bytes], budget: int) -> list[list[bytes]]:
    pages = []
    start = 0
    while start < len(keys):
        records, start = record_page(engine.records, keys, start, budget)
        pages.append([k for k, _ in records])
    return pages


def test_record_pages_fit_the_budget_and_cover_every_present_key(engine: Engine) -> None:
    keys = [b"k%04d" % i for i in range(300)]
    for i, key in enumerate(keys):
        if i % 7:  # some keys are absent
            engine.put(key, b"x" * (100 + i * 10))
    budget = 20_000
    pages = _all_pages(engine, keys, budget)
    assert [k for page in pages for k in page] == [k for i, k in enumerate(keys) if i % 7]
    for page in pages:
        assert sum(record_cost(k, engine.get_record(k) or b"") for k in page) <= budget


def test_a_record_bigger_than_the_budget_still_moves_alone(engine: Engine) -> None:
    engine.put(b"a", b"x" * 10)
    engine.put(b"huge", b"x" * 100_000)
    engine.put(b"z", b"x" * 10)
    assert _all_pages(engine, [b"a", b"huge", b"z"], 1000) == [[b"a"], [b"huge"], [b"z"]]


def test_record_batches_and_key_batches_respect_their_bounds() -> None:
    records = [(b"k%d" % i, b"x" * 400) for i in range(10)]
    batches = list(record_batches(records, 1000))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
    assert list(record_batches([(b"big", b"x" * 5000)], 1000)) == [[(b"big", b"x" * 5000)]]
    keys = [b"%04d" % i for i in range(10)]
    assert [len(b) for b in key_batches(keys, 4, 10_000)] == [4, 4, 2]
    assert [len(b) for b in key_batches(keys, 100, 3 * 36)] == [3, 3, 3, 1]


def _buckets(contents: dict[int, list[bytes]]):  # type: ignore[no-untyped-def]
    def iter_bucket(bucket: int, after: bytes) -> Iterator[tuple[bytes, int, str]]:
        for key in sorted(contents.get(bucket, [])):
            if key > after:
                yield key, 1, "n"

    return iter_bucket


def test_bucket_pages_resume_inside_a_bucket_and_cover_everything_once() -> None:
    contents = {b: [b"%d/%03d" % (b, i) for i in range(b * 10)] for b in range(1, 6)}
    iter_bucket = _buckets(contents)
    buckets = [1, 2, 3, 4, 5]
    seen: list[bytes] = []
    after = b""
    while True:
        page = bucket_page(iter_bucket, buckets, after, 300)
        assert page.entries
        assert sum(len(k) + 1 + 32 for k, _, _ in page.entries) <= 300
        # The receiving side lists exactly the same range from its own copy.
        assert page_range(iter_bucket, buckets, after, page) == page.entries
        seen += [k for k, _, _ in page.entries]
        if not page.truncated:
            break
        buckets, after = buckets[page.resume_index :], page.resume_after_key
    assert seen == [k for b in range(1, 6) for k in sorted(contents[b])]


def test_page_range_of_a_truncated_page_stops_at_the_resume_key() -> None:
    mine = _buckets({1: [b"a", b"c", b"e"], 2: [b"b"]})
    page = BucketPage([(b"a", 1, "n")], True, 0, b"c")
    assert [k for k, _, _ in page_range(mine, [1, 2], b"", page)] == [b"a", b"c"]
    page = BucketPage([], True, 1, b"")
    assert [k for k, _, _ in page_range(mine, [1, 2], b"", page)] == [b"a", b"c", b"e"]


def test_sender_batches_fit_the_budget_but_never_split_a_write(engine: Engine) -> None:
    for i in range(10):
        engine.put(b"p%d" % i, b"x" * 1000)
    engine.write([PutOp(b"w%d" % i, b"x" * 1000) for i in range(5)])
    entries = engine.read_log(1, 100)
    shipped, through, nbytes = take_batch(entries, lambda k: True, 3500)
    assert len(shipped) == 3 and through == 3 and nbytes <= 3500
    # From the Write on: the whole Write goes, though it is larger than the budget.
    shipped, through, _ = take_batch(entries[10:], lambda k: True, 3500)
    assert len(shipped) == 5 and through == 15
    # Entries the peer may not hold cost nothing but are covered by through_seq.
    shipped, through, nbytes = take_batch(entries, lambda k: False, 3500)
    assert shipped == [] and through == 15 and nbytes == 0
