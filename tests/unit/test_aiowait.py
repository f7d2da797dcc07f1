"""wait_event: an event or a time limit, and never a lost cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from edgekv.aiowait import wait_event


async def test_true_when_the_event_is_set_false_when_the_time_is_up() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 60) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def _cancel_as_the_event_is_set(wait: Callable[[asyncio.Event], Awaitable[object]]) -> None:
    event = asyncio.Event()

    async def loop_until_cancelled() -> None:  # a node's loop: sender, anti-entropy
        while True:
            await wait(event)
            event.clear()

    task = asyncio.create_task(loop_until_cancelled())
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()  # e.g. a write wakes the sender ...
    task.cancel()  # ... in the same iteration as the node's stop cancels it
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 0.5)  # a lost cancellation leaves the loop running


async def test_a_cancel_arriving_as_the_event_is_set_stops_the_waiter() -> None:
    await _cancel_as_the_event_is_set(lambda event: wait_event(event, 60))


async def test_the_python_311_wait_for_race_that_wait_event_avoids() -> None:
    """The race is real on this Python: wait_for loses the cancel (fixed in 3.12)."""
    if sys.version_info >= (3, 12):
        pytest.skip("Python 3.12 rebuilt asyncio.wait_for on asyncio.timeout")
    with pytest.raises(TimeoutError):
        await _cancel_as_the_event_is_set(lambda event: asyncio.wait_for(event.wait(), 60))
