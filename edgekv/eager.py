"""Running a coroutine from the caller's own step: no task, no loop wake-up to start it.

A task costs a loop iteration before its first step and another when it hands
its result to whoever awaits it; on a stream that carries one small operation
after another that is a visible share of each operation (KV.Stream, the SDK's
streamed transport). Two tools for coroutines that are usually short:

* :func:`drive` runs a coroutine now, in the current step, and then on the
  done-callbacks of the futures it awaits, like a task that nobody can cancel
  (the SDK writes on a grpc.aio call this way: a caller that is cancelled
  while its request is being written must not cancel grpc's write, which
  would cancel the whole call);
* :func:`start` runs a coroutine now and, only if it suspends, hands the rest
  of it to a task, which can be cancelled as usual (the node's stream
  operations: a local read finishes in its first step and never makes a task).

Both follow asyncio's coroutine protocol (what ``Task`` does): a coroutine
suspends by yielding the future it waits on (or None: "run me again soon") and
is resumed with ``send(None)`` once that future is done. Event-loop thread only.

A coroutine's first step runs in the caller's task, so until it first suspends
it must not use what looks at ``asyncio.current_task()``: ``asyncio.timeout``
and, on Python 3.12+, ``asyncio.wait_for`` would cancel the caller's task when
they time out (use ``asyncio.wait(..., timeout=)``).
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
from collections.abc import Callable, Coroutine, Generator
from typing import Any


def drive(
    coro: Coroutine[Any, Any, Any],
    on_done: Callable[[BaseException | None], None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Run ``coro`` to its end without a task; then ``on_done(None)`` or ``on_done(exc)``.

    Its first step runs now, inside this call. Nothing can cancel it from
    outside (it has no task); a future it awaits that is cancelled raises
    CancelledError inside it, as in a task. Its result is dropped.
    """
    _step(coro, on_done, loop)


def _step(
    coro: Coroutine[Any, Any, Any],
    on_done: Callable[[BaseException | None], None],
    loop: asyncio.AbstractEventLoop,
    _awaited: object = None,
) -> None:
    # ``_awaited``: the future it waited on, when called back by that future's
    # add_done_callback (through a partial: no frame of its own, unlike a lambda).
    try:
        waiting = coro.send(None)
    except StopIteration:
        on_done(None)
        return
    except BaseException as exc:  # handed to on_done, CancelledError included
        on_done(exc)
        return
    if waiting is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
        loop.call_soon(_step, coro, on_done, loop)
    else:
        waiting._asyncio_future_blocking = False  # as Task.__step does
        waiting.add_done_callback(functools.partial(_step, coro, on_done, loop))


def start(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
) -> tuple[Any, asyncio.Task[Any] | None]:
    """Run ``coro`` now until it finishes or first suspends.

    Finished: ``(result, None)`` (its exception, if any, is raised here).
    Suspended: ``(None, task)`` where ``task`` runs the rest of it, resuming it
    when the future it suspended on is done; ``task.cancel()`` reaches it as it
    would a task made with ``create_task(coro)``.
    """
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return done.value, None
    return None, loop.create_task(_Rest(coro, waiting))


class _Rest(collections.abc.Coroutine):
    """The rest of a coroutine that suspended on ``waiting``, for a task to run.

    The task's first step yields ``waiting`` on the coroutine's behalf; after
    that it is the coroutine itself. A cancellation thrown in before that
    first step still reaches the coroutine (a generator would raise it unseen).
    """

    __slots__ = ("_coro", "_first", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting
        self._first = True

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            return self._waiting  # still marked blocking by the Future it came from
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._first:
            self._first = False
            error = typ if val is None else val
            cancelled = isinstance(error, asyncio.CancelledError) or (
                isinstance(error, type) and issubclass(error, asyncio.CancelledError)
            )
            if cancelled and isinstance(self._waiting, asyncio.Future):
                self._waiting.cancel()  # as Task.cancel() cancels the future its coroutine awaits
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - the old signature

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]  # it is its own iterator, as coroutines are

    def __next__(self) -> Any:
        return self.send(None)


__all__ = ["drive", "start"]
