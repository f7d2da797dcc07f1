"""Group commit: concurrent writes share one RocksDB write, and so one fsync.

With ``sync_writes: true`` every acknowledged write must be fsynced (~150 µs
here). Writes that arrive while a group is being synced queue up and go
together in the next group, so throughput grows with concurrency instead of
being capped at one fsync per write. Without ``sync_writes`` the node writes
inline and does not use this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from edgekv.storage.engine import DeleteOp, Engine, PutOp
from edgekv.storage.record import Version

DEFAULT_MAX_GROUP = 512


class GroupCommitter:
    """Queues write batches and commits them in groups on a worker thread.

    Each ``write`` keeps its own atomicity and version; a batch that fails
    validation fails alone. Must be used from one event loop.
    """

    def __init__(self, engine: Engine, *, max_group: int = DEFAULT_MAX_GROUP) -> None:
        self._engine = engine
        self._max_group = max_group
        # Owned by the event loop: handlers append, the flush task drains.
        self._pending: list[tuple[Sequence[PutOp | DeleteOp], asyncio.Future[Version]]] = []
        self._flush_task: asyncio.Task[None] | None = None

    async def write(self, ops: Sequence[PutOp | DeleteOp]) -> Version:
        """Commit ``ops`` atomically; returns once they are durable (fsynced).

        A batch with conditions is written alone (``Engine.write`` checks them
        under the write lock, between groups), on a worker thread.
        """
        if any(op.condition is not None for op in ops):
            return await asyncio.to_thread(self._engine.write, ops)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Version] = loop.create_future()
        self._pending.append((ops, future))
        if self._flush_task is None:
            self._flush_task = loop.create_task(self._run_flush())
        return await future

    async def _run_flush(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self._max_group]
                del self._pending[: self._max_group]
                try:
                    results: list[Version | BaseException] = list(
                        await asyncio.to_thread(self._engine.write_group, [ops for ops, _ in group])
                    )
                except Exception as exc:  # storage failure: every write of the group failed
                    results = [exc] * len(group)
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():  # the caller was cancelled; the write still happened
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flush_task = None

    async def drain(self) -> None:
        """Wait until every queued write has been committed (used at shutdown)."""
        while self._flush_task is not None:
            await asyncio.shield(self._flush_task)
