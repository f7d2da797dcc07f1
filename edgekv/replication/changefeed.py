"""Fan-out of engine changes to the event loop: wakes senders and Watch streams.

The engine calls ``on_change`` under its write lock, from the loop thread
(inline writes, applies) or a worker thread (group commit). Delivery to the
loop is direct in the first case and through ``call_soon_threadsafe`` in the
second, so the write path never blocks on a watcher or a sender.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from edgekv.storage.record import Change

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ByteQueue(Generic[_T]):
    """A FIFO bounded in items and in bytes (the caller says what each item weighs).

    An empty queue always admits one item, however large, so a single big
    change never blocks a stream for good. Owned by one event loop.
    """

    __slots__ = ("_items", "_max_bytes", "_max_items", "_readable", "_room", "bytes")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._items: deque[tuple[_T, int]] = deque()
        self.bytes = 0  # weight of the queued items
        self._readable = asyncio.Event()
        self._room = asyncio.Event()

    def offer(self, item: _T, nbytes: int) -> bool:
        """Queue ``item`` if there is room; False (nothing queued) if not."""
        items = self._items
        if items and (len(items) >= self._max_items or self.bytes + nbytes > self._max_bytes):
            return False
        items.append((item, nbytes))
        self.bytes += nbytes
        self._readable.set()
        return True

    async def put(self, item: _T, nbytes: int) -> None:
        """Queue ``item``, waiting for room."""
        while not self.offer(item, nbytes):
            self._room.clear()
            await self._room.wait()

    async def get(self) -> _T:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        item, nbytes = self._items.popleft()
        self.bytes -= nbytes
        self._room.set()
        return item

    def empty(self) -> bool:
        return not self._items


class ChangeFeed:
    """Connects one engine to the loop's consumers. Create it on the serving loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wakers: list[Callable[[], None]] = []
        self._signals: set[asyncio.Event] = set()  # feed tails (coordinator/resumable.py)
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
        for signal in self._signals:
            signal.set()

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` on the loop whenever the local log grows."""
        self._wakers.append(wake)

    def signal(self) -> asyncio.Event:
        """An event set after every change (the feed tail of one Watch waits on it)."""
        event = asyncio.Event()
        self._signals.add(event)
        return event

    def unsignal(self, event: asyncio.Event) -> None:
        self._signals.discard(event)

    @property
    def watchers(self) -> int:
        """Watch streams waiting on this feed now."""
        return len(self._signals)
