"""Resumable Watch over a real engine (coordinator/resumable.py): replay, resume, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from edgekv.config.watch import WatchSettings
from edgekv.coordinator.results import ChangeEvent
from edgekv.coordinator.resumable import FeedWatches
from edgekv.coordinator.watchtoken import decode_token
from edgekv.errors import InvalidArgument, WatchTokenExpired
from edgekv.replication.changefeed import ChangeFeed
from edgekv.storage.engine import Engine

FAST = WatchSettings(progress_interval_ms=20, failover_wait_ms=50)


def watches(engine: Engine, settings: WatchSettings = FAST) -> FeedWatches:
    signals = ChangeFeed(asyncio.get_running_loop())
    engine.add_listener(signals.on_change)
    return FeedWatches(engine, signals, settings, engine.node_id)


async def drain(events: AsyncGenerator[ChangeEvent, None], engine: Engine) -> list[ChangeEvent]:
    """Changes until the watch has passed the feed's head (a progress event says so)."""
    out: list[ChangeEvent] = []
    try:
        async with asyncio.timeout(30):
            async for event in events:
                if not event.progress:
                    out.append(event)
                elif decode_token(event.resume_token).seq >= engine.feed.head.seq:
                    return out
    finally:
        await events.aclose()
    raise AssertionError("unreachable")


async def watch(feeds: FeedWatches, engine: Engine, token: bytes, prefix: bytes = b"") -> list:
    start = await feeds.start(token)
    return await drain(feeds.tail(prefix, start, initial_progress=True), engine)


def keys(events: list[ChangeEvent]) -> list[bytes]:
    return [e.key for e in events]


async def test_resume_on_the_same_pop_replays_exactly_the_rest(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        feeds = watches(engine)
        begin = feeds.token_now()
        for i in range(20):
            engine.put(b"w/%02d" % i, b"v")
        engine.delete(b"w/03")
        everything = await watch(feeds, engine, begin)
        assert keys(everything) == [b"w/%02d" % i for i in range(20)] + [b"w/03"]
        assert everything[-1].deleted and everything[0].local
        for i, event in enumerate(everything):
            assert await watch(feeds, engine, event.resume_token) == everything[i + 1 :]
    finally:
        engine.close()


async def test_resume_after_a_restart(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    feeds = watches(engine)
    begin = feeds.token_now()
    engine.put(b"a", b"1")
    first = await watch(feeds, engine, begin)
    assert keys(first) == [b"a"]
    engine.put(b"b", b"2")
    engine.close()
    engine = Engine(tmp_path / "db", "n1")
    try:
        engine.put(b"c", b"3")
        feeds = watches(engine)
        assert keys(await watch(feeds, engine, first[-1].resume_token)) == [b"b", b"c"]
    finally:
        engine.close()


async def test_prefix_filter_still_advances_the_token(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        feeds = watches(engine)
        begin = feeds.token_now()
        engine.put(b"x/1", b"v")
        engine.put(b"w/1", b"v")
        engine.put(b"x/2", b"v")
        only_w = await watch(feeds, engine, begin, prefix=b"w/")
        assert keys(only_w) == [b"w/1"]
        assert decode_token(only_w[0].resume_token).seq == 2
    finally:
        engine.close()


async def test_token_trimmed_past_is_expired(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        feeds = watches(engine)
        begin = feeds.token_now()
        for i in range(10):
            engine.put(b"k%d" % i, b"v")
        engine.feed.trim(max_entries=5, max_bytes=1 << 30, max_age_ms=1 << 40)
        with pytest.raises(WatchTokenExpired, match="rescan"):
            await feeds.start(begin)
        # The rescue: a fresh token (what a scan returns), then nothing is missed.
        fresh = feeds.token_now()
        engine.put(b"after", b"v")
        assert keys(await watch(feeds, engine, fresh)) == [b"after"]
    finally:
        engine.close()


async def test_malformed_token_is_invalid_argument(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        with pytest.raises(InvalidArgument, match="resume_token"):
            await watches(engine).start(b"\x01garbage")
    finally:
        engine.close()


def _replicate(src: Engine, dst: Engine, from_seq: int = 1) -> int:
    """Apply ``src``'s log to ``dst`` in log order (what a sender does); returns the next seq."""
    entries = src.read_log(from_seq, 100_000)
    if entries:
        dst.apply_many([(e.key, e.record) for e in entries])
        return entries[-1].seq + 1
    return from_seq


async def test_failover_resumes_at_another_pop_without_gaps_or_duplicates(tmp_path: Path) -> None:
    a, b = Engine(tmp_path / "a", "a"), Engine(tmp_path / "b", "b")
    try:
        feeds_a, feeds_b = watches(a), watches(b)
        begin = feeds_a.token_now()
        for i in range(10):
            a.put(b"k%d" % i, b"a%d" % i)
            b.put(b"k%d" % (i + 5), b"b%d" % i)  # overlaps: conflicts resolved by LWW
        seq_ab = _replicate(a, b)
        seq_ba = _replicate(b, a)
        seen_at_a = await watch(feeds_a, a, begin)
        cut = len(seen_at_a) // 2
        token = seen_at_a[cut - 1].resume_token
        a.put(b"k1", b"late-a")
        b.put(b"k14", b"late-b")
        _replicate(a, b, seq_ab)
        _replicate(b, a, seq_ba)
        at_b = await watch(feeds_b, b, token)
        delivered = seen_at_a[:cut] + at_b
        versions = [(e.key, e.timestamp, e.origin) for e in delivered]
        assert len(set(versions)) == len(versions)  # no duplicates
        last: dict[bytes, tuple[int, str]] = {}
        for key, ts, origin in versions:
            assert (ts, origin) > last.get(key, (0, "")), key  # versions strictly increase
            last[key] = (ts, origin)
        final = {k: (ts, origin) for k, _, ts, origin, _ in _items(b)}
        assert last == final  # every key's final state delivered
        assert all(e.served_by == "b" for e in at_b)
        assert decode_token(at_b[-1].resume_token).node_id == "b"
    finally:
        a.close()
        b.close()


def _items(engine: Engine) -> list[tuple[bytes, bytes, int, str, int]]:
    page = engine.scan(b"", b"", limit=1000)
    return [(i.key, i.value, i.timestamp, i.origin, i.expires_at_ms) for i in page.items]


async def test_foreign_token_older_than_the_feed_is_expired(tmp_path: Path) -> None:
    a, b = Engine(tmp_path / "a", "a"), Engine(tmp_path / "b", "b")
    try:
        feeds_a, feeds_b = watches(a), watches(b)
        begin = feeds_a.token_now()
        for i in range(10):
            a.put(b"k%d" % i, b"v")
        _replicate(a, b)
        b.feed.trim(max_entries=3, max_bytes=1 << 30, max_age_ms=1 << 40)
        with pytest.raises(WatchTokenExpired, match="older than b's change feed"):
            await feeds_b.start(begin)
        token = feeds_a.token_now()  # a token past what b trimmed is fine
        a.put(b"new", b"v")
        _replicate(a, b, 11)
        assert keys(await watch(feeds_b, b, token)) == [b"new"]
    finally:
        a.close()
        b.close()


async def test_a_token_never_replays_a_key_the_node_may_not_hold(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db", "n1")
    try:
        feeds = watches(engine)
        begin = feeds.token_now()
        engine.put(b"eu/secret", b"left behind by a rule change")
        engine.put(b"g/public", b"v")
        start = await feeds.start(begin)
        held = feeds.tail(b"", start, lambda key: not key.startswith(b"eu/"), True)
        assert keys(await drain(held, engine)) == [b"g/public"]
    finally:
        engine.close()
