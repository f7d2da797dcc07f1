"""edgekv/eager.py: coroutines run from the caller's step, without a task or with one late."""

from __future__ import annotations

import asyncio

import pytest

from edgekv import eager


async def test_drive_runs_the_first_step_now_and_the_rest_on_callbacks() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []
    ended: list[BaseException | None] = []
    gate = loop.create_future()

    async def body() -> None:
        steps.append("first")
        await gate
        steps.append("after gate")
        await asyncio.sleep(0)  # a bare yield
        steps.append("end")

    eager.drive(body(), ended.append, loop)
    assert steps == ["first"] and ended == []  # ran inside drive(), up to the gate
    gate.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert steps == ["first", "after gate", "end"] and ended == [None]


async def test_drive_hands_errors_and_cancelled_futures_to_on_done() -> None:
    loop = asyncio.get_running_loop()
    ended: list[BaseException | None] = []
    gate = loop.create_future()

    async def waits() -> None:
        await gate

    async def fails() -> None:
        raise ValueError("bad")

    eager.drive(fails(), ended.append, loop)
    assert isinstance(ended[0], ValueError)
    eager.drive(waits(), ended.append, loop)
    gate.cancel()  # as grpc does when the call ends: the coroutine sees CancelledError
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert isinstance(ended[1], asyncio.CancelledError)


async def test_start_finishes_at_once_without_a_task() -> None:
    async def quick() -> int:
        return 7

    assert eager.start(quick(), asyncio.get_running_loop()) == (7, None)

    async def fails() -> int:
        raise KeyError("k")

    with pytest.raises(KeyError):
        eager.start(fails(), asyncio.get_running_loop())


async def test_start_hands_a_suspended_coroutine_to_a_task_it_finishes() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    steps: list[str] = []

    async def slow() -> str:
        steps.append("first")
        value = await gate
        steps.append("second")
        await asyncio.sleep(0)
        return value

    result, task = eager.start(slow(), loop)
    assert result is None and task is not None and steps == ["first"]
    gate.set_result("done")
    assert await task == "done" and steps == ["first", "second"]


@pytest.mark.parametrize("before_first_step", [True, False])
async def test_cancelling_the_task_reaches_the_coroutine(before_first_step: bool) -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    seen: list[str] = []

    async def slow() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            return "answered anyway"
        return "not cancelled"

    _, task = eager.start(slow(), loop)
    assert task is not None
    if not before_first_step:
        await asyncio.sleep(0)  # the task now waits on the gate
    task.cancel()
    assert await task == "answered anyway" and seen == ["cancelled"]


async def test_cancel_before_the_first_step_cancels_what_it_awaits_like_a_task() -> None:
    loop = asyncio.get_running_loop()
    inner_done: list[str] = []

    async def inner() -> None:
        await asyncio.sleep(0.05)
        inner_done.append("ran to its end")

    async def body() -> None:
        await asyncio.ensure_future(inner())  # suspends on the inner task

    _, task = eager.start(body(), loop)
    assert task is not None
    task.cancel()  # before the task's first step
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert inner_done == []  # cancelled with it, as create_task(body()).cancel() would
