"""The applied frontier (replication/frontier.py): in order only, persisted, gaps healed."""

from __future__ import annotations

import asyncio

from edgekv.replication.frontier import AppliedFrontier


class Meta(dict[bytes, bytes]):
    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value


class Clock:
    last = 100


def frontier(meta: Meta | None = None) -> AppliedFrontier:
    return AppliedFrontier(meta if meta is not None else Meta(), "me", Clock(), ["a", "b"])


def test_frontier_advances_on_contiguous_batches_only() -> None:
    f = frontier()
    f.on_batch("a", 1, 10, 500)
    assert f.applied("a") == 500
    f.on_batch("a", 11, 20, 700)
    assert f.applied("a") == 700
    f.on_batch("a", 5, 15, 600)  # a re-delivery: nothing goes back
    assert f.applied("a") == 700
    f.on_batch("a", 30, 40, 900)  # seqs 21..29 never arrived: a gap
    assert f.applied("a") == 700 and "a" in f.gaps()


def test_own_frontier_is_the_clock() -> None:
    f = frontier()
    assert f.missing({"me": 100}) == {} and f.missing({"me": 101}) == {"me": 101}


def test_frontier_is_restored_from_meta() -> None:
    meta = Meta()
    frontier(meta).on_batch("b", 1, 3, 42)
    assert frontier(meta).applied("b") == 42


def test_gap_heals_only_after_a_sync_that_started_after_it() -> None:
    gaps: list[str] = []
    f = frontier()
    f.on_gap = gaps.append
    f.on_batch("a", 1, 10, 500)
    f.on_batch("a", 50, 60, 900)  # the origin skipped past its log retention
    f.on_batch("a", 61, 70, 950)  # the stream goes on, followed on the side
    assert gaps == ["a"] and f.applied("a") == 500
    f.on_synced("a", f.gaps()["a"] - 1000)  # a sync that began before the gap
    assert f.applied("a") == 500
    f.on_synced("a", f.gaps()["a"])
    assert f.applied("a") == 950 and f.gaps() == {}


def test_unknown_origins_are_not_tracked() -> None:
    f = frontier()
    f.on_batch("zz", 1, 2, 3)
    assert not f.knows("zz") and f.knows("me") and f.knows("a")


async def test_waiters_wake_when_the_frontier_covers_them() -> None:
    f = frontier()
    waiting = asyncio.create_task(f.wait({"a": 300, "b": 200}, timeout_s=30))
    await asyncio.sleep(0)
    f.on_batch("a", 1, 5, 300)
    await asyncio.sleep(0)
    assert not waiting.done()
    f.on_batch("b", 1, 1, 250)
    assert await asyncio.wait_for(waiting, 5) == {}


async def test_wait_times_out_with_what_is_missing() -> None:
    f = frontier()
    assert await f.wait({"a": 10}, timeout_s=0.01) == {"a": 10}
    assert await f.wait({"me": 10_000}, timeout_s=30) == {"me": 10_000}  # never waited for
