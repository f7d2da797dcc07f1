"""Waiting for an event with a time limit, without losing a cancellation.

``asyncio.wait_for(event.wait(), t)`` is not used in edgekv (ruff bans it): on
Python 3.11 it runs the wait in a task of its own, and when that task finishes
in the same loop iteration that a cancellation reaches the waiter, wait_for
returns the result and the cancellation is gone. A node's long-lived loop
(sender, anti-entropy, a Watch feed) stopped that way runs on, and the node's
stop waits for it forever. ``asyncio.timeout`` waits in the caller's own task,
which a cancellation always reaches (Python 3.12 rebuilt wait_for on it).
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True if it was set.

    Uses the current task's cancel machinery (asyncio.timeout): call it from a
    task, not from a coroutine's first step run by edgekv.eager.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
