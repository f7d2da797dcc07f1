"""Resumable Watch (coordinator/resumable.py) against random histories on real engines.

* Same PoP: a watch resumed from the token of any event yields exactly the
  events that followed it.
* Another PoP: a watch that saw a prefix of one PoP's stream and resumes at
  another PoP (both applying each other's writes in origin order, with LWW
  conflicts on few keys) delivers no version twice, versions per key strictly
  increase, and every key ends at the other PoP's final state.

Engines are created inside the test body: a function-scoped tmp_path would be
shared by every hypothesis example.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv.config.watch import WatchSettings
from edgekv.coordinator.results import ChangeEvent
from edgekv.coordinator.resumable import FeedWatches
from edgekv.coordinator.watchtoken import decode_token
from edgekv.replication.changefeed import ChangeFeed
from edgekv.storage.engine import Engine

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = WatchSettings(progress_interval_ms=5, failover_wait_ms=20)
KEYS = [b"w/a", b"w/b", b"w/c", b"x/d"]

# One step: ("put"|"del", node 0/1, key index) or ("sync", from node, 0).
steps_strategy = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["put", "del"]), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("sync"), st.integers(0, 1), st.just(0)),
    ),
    min_size=1,
    max_size=30,
)


def _watches(engine: Engine) -> FeedWatches:
    signals = ChangeFeed(asyncio.get_running_loop())
    engine.add_listener(signals.on_change)
    return FeedWatches(engine, signals, FAST, engine.node_id)


async def _drain(feeds: FeedWatches, engine: Engine, token: bytes, prefix: bytes) -> list:
    events: AsyncGenerator[ChangeEvent, None] = feeds.tail(
        prefix, await feeds.start(token), initial_progress=True
    )
    out: list[ChangeEvent] = []
    async with asyncio.timeout(30):
        async for event in events:
            if not event.progress:
                out.append(event)
            elif decode_token(event.resume_token).seq >= engine.feed.head.seq:
                break
    await events.aclose()
    return out


class _Pair:
    """Two engines that replicate to each other in log (origin) order, on demand."""

    def __init__(self, root: Path) -> None:
        self.nodes = [Engine(root / "a", "a"), Engine(root / "b", "b")]
        self._next = [1, 1]  # next log seq of node i to ship to the other

    def run(self, step: tuple[str, int, int]) -> None:
        kind, i, k = step
        if kind == "put":
            self.nodes[i].put(KEYS[k], b"v")
        elif kind == "del":
            self.nodes[i].delete(KEYS[k])
        else:
            self.sync(i)

    def sync(self, i: int) -> None:
        entries = self.nodes[i].read_log(self._next[i], 10_000)
        if entries:
            self.nodes[1 - i].apply_many([(e.key, e.record) for e in entries])
            self._next[i] = entries[-1].seq + 1

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@SETTINGS
@given(steps=steps_strategy, prefix=st.sampled_from([b"", b"w/"]), data=st.data())
def test_same_pop_resume_yields_exactly_the_suffix(
    steps: list[tuple[str, int, int]], prefix: bytes, data: st.DataObject
) -> None:
    async def body(root: Path) -> None:
        pair = _Pair(root)
        try:
            a = pair.nodes[0]
            feeds = _watches(a)
            begin = feeds.token_now()
            for step in steps:
                pair.run(step)
            everything = await _drain(feeds, a, begin, prefix)
            if not everything:
                return
            i = data.draw(st.integers(0, len(everything) - 1))
            resumed = await _drain(feeds, a, everything[i].resume_token, prefix)
            assert resumed == everything[i + 1 :]
        finally:
            pair.close()

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(body(Path(root)))


@SETTINGS
@given(before=steps_strategy, after=steps_strategy, data=st.data())
def test_failover_resume_delivers_each_final_state_once_in_order(
    before: list[tuple[str, int, int]], after: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    async def body(root: Path) -> None:
        pair = _Pair(root)
        try:
            a, b = pair.nodes
            feeds_a, feeds_b = _watches(a), _watches(b)
            begin = feeds_a.token_now()
            for step in before:
                pair.run(step)
            seen = await _drain(feeds_a, a, begin, b"")
            cut = data.draw(st.integers(0, len(seen)))
            token = seen[cut - 1].resume_token if cut else begin
            for step in after:
                pair.run(step)
            pair.sync(0)
            pair.sync(1)  # converged: b has everything a had seen
            delivered = seen[:cut] + await _drain(feeds_b, b, token, b"")
            versions = [(e.key, (e.timestamp, e.origin)) for e in delivered]
            assert len(set(versions)) == len(versions)
            last: dict[bytes, tuple[int, str]] = {}
            for key, version in versions:
                assert version > last.get(key, (0, "")), (key, version, last.get(key))
                last[key] = version
            final = {
                key: (int(ts), origin)
                for key, record in b.records(KEYS)
                for _, ts, _, origin, _ in [_decode(record)]
            }
            assert last == final
        finally:
            pair.close()

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(body(Path(root)))


def _decode(record: bytes) -> tuple[bool, int, int, str, bytes]:
    from edgekv import native

    return native.decode_record(record)
