"""What every measured system or path offers the workloads: one small adapter each.

An adapter owns one connected client of one system (and, for the peers, the
server process it starts). The workloads (bench/compare/measure.py) only call:

* ``get(key)``, ``put(key)``, ``get_many(keys)``: blocking, one caller;
* ``aget``, ``aput``, ``aget_many``: the same on the adapter's own event loop
  (``self.loop``), shared by the concurrent callers after ``aopen()``;
* ``sequential(op, args)``: latencies of calls made one at a time (an adapter
  whose client is asyncio-only, NATS's, overrides it to time awaits on its loop).

Each adapter says why it cannot run (``unavailable``: a missing server binary,
client library or SDK feature) before anything is started, so a run reports
"skipped: WHY" and goes on with the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

VALUE_BYTES = 100


class Adapter:
    """One system (or one edgekv path): its name, its server's PIDs and its calls."""

    name = "?"  # the row label in the results
    family = "?"  # edgekv, Redis, etcd, NATS: one colour per family in the plots
    value = b""  # the value every put writes (VALUE_BYTES long), set by the run

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.versions: dict[str, str] = {}  # what ran: server, client library, options

    # -- life cycle --------------------------------------------------------------

    def unavailable(self) -> str | None:
        """Why this system cannot be measured in this build or on this machine (None: it can)."""
        return None

    def async_unavailable(self) -> str | None:
        """Why the concurrent workloads cannot run on it (None: they can)."""
        return None

    def start(self, tmp: Path) -> None:
        """Start the server (peers) or attach to the shared one, and connect."""

    @property
    def server_pids(self) -> list[int]:
        """The processes whose CPU time counts as server CPU."""
        return []

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        """Write every key with ``value`` (the same dataset in every system)."""
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect and stop what ``start`` started; safe to call twice."""
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.aclose())
            self.loop.close()

    def read_value(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` (None when absent): checks that the load took."""
        raise NotImplementedError

    # -- one caller ----------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        raise NotImplementedError

    def put(self, key: bytes) -> Any:
        raise NotImplementedError

    def get_many(self, keys: Sequence[bytes]) -> Any:
        raise NotImplementedError

    def sequential(self, op: str, args: Sequence[Any]) -> list[float]:
        """Latency (µs) of each call of ``op`` over ``args``, made one after the other."""
        call: Callable[[Any], Any] = getattr(self, op)
        out = []
        clock = time.perf_counter_ns
        for arg in args:
            t0 = clock()
            call(arg)
            out.append((clock() - t0) / 1000.0)
        return out

    # -- concurrent callers (on self.loop) -----------------------------------------

    async def aopen(self) -> None:
        """Open the asyncio client the concurrent callers share."""

    async def aclose(self) -> None:
        """Close what ``aopen`` opened."""

    async def aget(self, key: bytes) -> Any:
        raise NotImplementedError

    async def aput(self, key: bytes) -> Any:
        raise NotImplementedError

    async def aget_many(self, keys: Sequence[bytes]) -> Any:
        raise NotImplementedError

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` to completion on this adapter's loop."""
        return self.loop.run_until_complete(coro)


class AsyncOnlyAdapter(Adapter):
    """An adapter whose client library is asyncio-only: single-caller calls await too."""

    def sequential(self, op: str, args: Sequence[Any]) -> list[float]:
        call: Callable[[Any], Awaitable[Any]] = getattr(self, "a" + op)

        async def timed() -> list[float]:
            out = []
            clock = time.perf_counter_ns
            for arg in args:
                t0 = clock()
                await call(arg)
                out.append((clock() - t0) / 1000.0)
            return out

        return list(self.run(timed()))

    def get(self, key: bytes) -> Any:
        return self.run(self.aget(key))

    def put(self, key: bytes) -> Any:
        return self.run(self.aput(key))

    def get_many(self, keys: Sequence[bytes]) -> Any:
        return self.run(self.aget_many(keys))


def gather_chunks(
    loop: asyncio.AbstractEventLoop,
    call: Callable[[Any], Awaitable[Any]],
    items: Sequence[Any],
    chunk: int = 500,
) -> None:
    """Await ``call(item)`` for every item, ``chunk`` at a time (bulk loads)."""

    async def all_chunks() -> None:  # gather() must be called on the running loop
        for i in range(0, len(items), chunk):
            await asyncio.gather(*(call(x) for x in items[i : i + chunk]))

    loop.run_until_complete(all_chunks())
