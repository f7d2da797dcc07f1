"""Watch in the request layer: which PoPs serve a prefix's changes, and how they are merged.

A prefix whose keys all live on this node is served from its change feed
(coordinator/resumable.py), resumable from a token. A prefix whose keys all
live on one other placement is relayed from the nearest node holding it, with
the client's token passed through and that node's tokens passed back, so it
resumes there (or at the next candidate, which accepts another PoP's token).
A prefix that spans placements held by several PoPs is merged from all of them
as it happens; such a Watch has no single position, so its events carry no
token and a resume token is refused (watch each placement's prefix instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from edgekv.cluster.routing import Router
from edgekv.config.watch import WatchSettings
from edgekv.coordinator.call import Call
from edgekv.coordinator.draining import StreamDrain
from edgekv.coordinator.forwarding import Forwarder
from edgekv.coordinator.results import ChangeEvent
from edgekv.coordinator.resumable import FeedWatches
from edgekv.coordinator.stitching import split_range
from edgekv.errors import EdgeKVError, InvalidArgument, Unavailable
from edgekv.keyrange import prefix_end
from edgekv.replication.changefeed import ByteQueue, ChangeFeed
from edgekv.storage.engine import Engine

# Events a merged (multi-PoP) Watch may have queued for its client, and at
# most Limits.max_watch_queue_bytes of them; the sources wait for room.
WATCH_QUEUE_EVENTS = 10_000

_WatchQueue = ByteQueue[ChangeEvent | BaseException]


class Watching:
    """Serves Watch for one node's coordinator. Runs on the node's event loop."""

    def __init__(
        self,
        engine: Engine,
        router: Router,
        forwarder: Forwarder,
        signals: ChangeFeed,
        settings: WatchSettings,
        drain: StreamDrain | None = None,
    ) -> None:
        self._engine = engine
        # Ends every watch with UNAVAILABLE when the node stops (coordinator/draining.py).
        self._drain = drain or StreamDrain(router.spec.id)
        self._router = router
        self._forwarder = forwarder
        self.feeds = FeedWatches(engine, signals, settings, router.spec.id)

    async def watch(
        self, prefix: bytes, call: Call, resume_token: bytes = b"", initial_progress: bool = False
    ) -> AsyncGenerator[ChangeEvent, None]:
        """Changes under ``prefix`` (see the module docstring); never ends by itself."""
        hi = prefix_end(prefix)
        call.principal.authorize("read", key_range=(prefix, hi))
        router = self._router
        owners: list[bytes] = []
        local = True
        held_by_me: Callable[[bytes], bool] | None = (
            None if router.everything_local else router.is_local
        )
        if held_by_me is not None:
            held, remote = split_range(prefix, hi, router.placement, router.region)
            if call.forwarded_by is not None:
                if not held:
                    router.refuse_misrouted(call.forwarded_by)
            else:
                owners = sorted({owner for _, _, owner in remote})
                local = bool(held)
        source: AsyncIterator[ChangeEvent]
        if local and not owners:
            start = await self.feeds.start(resume_token)
            source = self.feeds.tail(prefix, start, held_by_me, initial_progress)
        elif not local and len(owners) == 1:
            source = self._forwarder.watch(
                max(owners[0], prefix, key=len), owners[0], call, resume_token, initial_progress
            )
        elif resume_token:
            raise InvalidArgument(
                f"prefix {prefix!r} spans placements held by different PoPs, so its Watch "
                "has no single position to resume from; watch each placement's prefix on "
                "its own to resume"
            )
        else:
            source = self._merged(prefix, owners, local, call)
        next_of = self._drain.next
        try:
            while True:
                try:
                    event = await next_of(source)
                except StopAsyncIteration:
                    return
                yield event
        finally:  # closed now, not when collected: the subscriptions end with the call
            await _close(source)

    async def _merged(
        self, prefix: bytes, owners: list[bytes], local: bool, call: Call
    ) -> AsyncGenerator[ChangeEvent, None]:
        queue: _WatchQueue = ByteQueue(
            WATCH_QUEUE_EVENTS, self._engine.limits.max_watch_queue_bytes
        )
        sources: list[AsyncIterator[ChangeEvent]] = []
        if local:
            start = await self.feeds.start(b"")  # taken before the first wait: nothing is missed
            held = self._router.is_local
            sources.append(self.feeds.tail(prefix, start, held))
        for owner in owners:
            sources.append(self._forwarder.watch(max(owner, prefix, key=len), owner, call))
        pumps = [asyncio.create_task(_pump(source, queue)) for source in sources]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for pump in pumps:
                pump.cancel()
            # Wait for the relays to unwind, so their remote streams are closed
            # (and remote subscriptions gone) by the time the Watch has ended.
            await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(source: AsyncIterator[ChangeEvent], queue: _WatchQueue) -> None:
    """Move one source's changes (without tokens: see the module docstring) into ``queue``."""
    try:
        async for event in source:
            if not event.progress:
                await queue.put(event._replace(resume_token=b""), len(event.key) + len(event.value))
    except EdgeKVError as exc:
        await queue.put(exc, 0)
    except Exception as exc:
        await queue.put(Unavailable(f"a part of this watch failed: {exc!r}"), 0)
    finally:
        await _close(source)


async def _close(source: AsyncIterator[ChangeEvent]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
