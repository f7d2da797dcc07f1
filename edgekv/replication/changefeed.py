"""Fan-out of engine changes to the event loop: wakes senders, feeds watchers.

The engine calls ``on_change`` under its write lock, from the loop thread
(inline writes, applies) or a worker thread (group commit). Delivery to the
loop is direct in the first case and through ``call_soon_threadsafe`` in the
second, so the write path never blocks on a watcher or a sender.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from edgekv.storage.record import Change

log = logging.getLogger(__name__)

DEFAULT_WATCH_QUEUE = 10_000


class WatchOverflow(Exception):
    """A watcher fell too far behind; its stream is ended (re-watch and re-scan)."""


class Watcher:
    """One Watch stream's subscription: changes under ``prefix``, in commit order."""

    __slots__ = ("_queue", "overflowed", "prefix")

    def __init__(self, prefix: bytes, max_queue: int) -> None:
        self.prefix = prefix
        self._queue: asyncio.Queue[tuple[Change, bool]] = asyncio.Queue(max_queue)
        self.overflowed = False

    def _offer(self, change: Change, local: bool) -> bool:
        try:
            self._queue.put_nowait((change, local))
            return True
        except asyncio.QueueFull:
            self.overflowed = True
            return False

    async def next(self) -> tuple[Change, bool]:
        """The next change and whether it was local; raises WatchOverflow when dropped."""
        if self.overflowed and self._queue.empty():
            raise WatchOverflow("watcher fell behind by more than its queue; re-watch")
        return await self._queue.get()


class ChangeFeed:
    """Connects one engine to the loop's consumers. Create it on the serving loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wakers: list[Callable[[], None]] = []
        self._watchers: set[Watcher] = set()
        self.last_seq = 0

    def on_change(self, changes: list[Change], last_seq: int, local: bool) -> None:
        """Engine listener: safe to call from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._deliver(changes, last_seq, local)
        else:
            self._loop.call_soon_threadsafe(self._deliver, changes, last_seq, local)

    def _deliver(self, changes: list[Change], last_seq: int, local: bool) -> None:
        if last_seq > self.last_seq:
            self.last_seq = last_seq
            for wake in self._wakers:
                wake()
        for watcher in tuple(self._watchers):
            prefix = watcher.prefix
            for change in changes:
                if change.key.startswith(prefix) and not watcher._offer(change, local):
                    self._watchers.discard(watcher)
                    break

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` on the loop whenever the local log grows."""
        self._wakers.append(wake)

    def watch(self, prefix: bytes, max_queue: int = DEFAULT_WATCH_QUEUE) -> Watcher:
        watcher = Watcher(prefix, max_queue)
        self._watchers.add(watcher)
        return watcher

    @property
    def watchers(self) -> int:
        """Watch subscriptions alive now."""
        return len(self._watchers)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
