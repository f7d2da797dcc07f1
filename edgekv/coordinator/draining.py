"""Ending a node's long-lived streams when it stops, so a stop takes milliseconds.

A Watch or a KV.Stream stays open for as long as its client wants; gRPC's and
the HTTP door's graceful stop wait for every open call up to the grace period,
so one idle watcher made every SIGTERM take the whole grace (10 s) and then cut
the stream without a status the SDK could act on. Instead, when the node stops,
each stream that is waiting for its next item (a change to send, a request to
read) ends at once with UNAVAILABLE, which clients treat as "go to another PoP":
the SDK resumes a Watch from its last token there, and reopens its KV.Stream.
A stream busy with an item ends before it waits for the next one, so nothing
half-done is cut: KV.Stream answers what it started first (kv_stream.py).

Only a task parked in :meth:`Parked.read` (or :meth:`StreamDrain.next`) is
cancelled, where the cancellation is ours to turn into UNAVAILABLE; one inside
gRPC's or the HTTP server's own code (writing an answer) is left alone (a
cancellation there would end the call as CANCELLED, which a client takes as its
own doing, and stop resuming).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from edgekv.errors import Unavailable

_T = TypeVar("_T")


class Parked:
    """One stream's handler task as :class:`StreamDrain` sees it: registered once per
    stream (not per item, which is what a KV.Stream carries thousands of a second)."""

    __slots__ = ("_drain", "task", "waiting")

    def __init__(self, drain: StreamDrain, task: asyncio.Task[object]) -> None:
        self._drain = drain
        self.task = task
        self.waiting = False  # parked in read(): the only place start() cancels it

    async def read(self, next_item: Callable[[], Awaitable[_T]]) -> _T:
        """``await next_item()``, or Unavailable once the node is draining."""
        drain = self._drain
        if drain.draining:
            raise drain.error()
        self.waiting = True
        try:
            return await next_item()
        except asyncio.CancelledError:
            if not drain.draining:
                raise
            self.task.uncancel()  # our cancellation: it ends the stream with a status instead
            raise drain.error() from None
        finally:
            self.waiting = False


class StreamDrain:
    """The long-lived streams of one node run; ``start`` ends them. On the node's event loop."""

    __slots__ = ("_parked", "draining", "node_id")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.draining = False
        self._parked: set[Parked] = set()

    def error(self) -> Unavailable:
        return Unavailable(
            f"node {self.node_id} is shutting down: reconnect to another PoP "
            "(a Watch resumes there from its last resume_token)"
        )

    def park(self) -> Parked:
        """The current task, registered until :meth:`unpark`: read its stream's items
        through ``Parked.read``."""
        task = asyncio.current_task()
        assert task is not None
        parked = Parked(self, task)
        self._parked.add(parked)
        return parked

    def unpark(self, parked: Parked) -> None:
        self._parked.discard(parked)

    async def next(self, items: AsyncIterator[_T]) -> _T:
        """The next of ``items`` (StopAsyncIteration at its end), or Unavailable once draining."""
        parked = self.park()
        try:
            return await parked.read(items.__anext__)
        finally:
            self.unpark(parked)

    def start(self) -> int:
        """End every stream waiting for its next item now, and the others before their next
        one; the number ended now."""
        self.draining = True
        waiting = [parked for parked in self._parked if parked.waiting]
        for parked in waiting:
            parked.task.cancel()
        return len(waiting)


__all__ = ["Parked", "StreamDrain"]
