"""Paged and streamed reads of ``edgekv.AsyncClient``: scan, watch, watch_token.

A part of the client kept in its own module (one screen each); ``AsyncClient``
(aio.py) inherits it. Like aio.py, this file is the source of its blocking
twin: scripts/unasync.py writes edgekv/client/sync_reads.py from it. Edit this
file, then run ``make unasync``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._base import ClientBase
from edgekv.client._types import Entry, WatchEvent
from edgekv.v1 import kv_pb2

# The watch's backoff between resumes (an indirection, as in aio.py).
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


class AsyncReads(ClientBase):
    """``scan``, ``watch`` and ``watch_token`` of ``AsyncClient`` (its base class)."""

    if TYPE_CHECKING:  # defined by AsyncClient
        _connected: bool

        if True:  # ASYNC

            async def connect(self) -> None: ...

        async def _call(
            self, key: bytes | None, method: str, request: Any, idempotent: bool,
            timeout_s: float | None,
        ) -> Any: ...  # fmt: skip

    def scan(
        self,
        prefix: bytes | str = b"",
        *,
        start: bytes | str = b"",
        end: bytes | str = b"",
        page_size: int = 100,
        keys_only: bool = False,
        limit: int | None = None,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Entry]:
        """Live entries under ``prefix`` and in [start, end), in key order.

        Returns an async iterator at once (the arguments are checked now) that
        fetches ``page_size`` items per call and follows the page token until
        the range is exhausted, or until ``limit`` entries were yielded (None:
        no limit). Pages are fetched lazily, each one call with its own
        ``timeout_s`` and retries. Entries written while iterating may or may
        not appear; each key appears at most once.
        """
        req = codec.scan_request(prefix, start, end, page_size, keys_only)
        remaining = codec.check_limit(limit)
        level = self._level(consistency)
        if not level and self._embedded is not None:  # LOCAL reads only
            local = self._embedded.scan(req.prefix, req.start, req.end, page_size, keys_only,
                                        remaining)  # fmt: skip
            if local is not None:
                return _local_pages(local)
        return self._scan(req, remaining, level, timeout_s)

    async def _scan(
        self, req: kv_pb2.ScanRequest, remaining: int | None, level: int, timeout_s: float | None
    ) -> AsyncIterator[Entry]:
        route = codec.scan_route_key(req)
        page_size = req.limit
        while remaining is None or remaining > 0:
            if remaining is not None and remaining < page_size:
                req.limit = remaining
            if level:
                self._session.stamp(req, level)  # each page: the token as it stands now
            resp = await self._call(route, "Scan", req, True, timeout_s)
            if level:
                self._session.observe(resp.session_token)
            entries = codec.scan_entries(resp)
            if remaining is not None:
                entries = entries[:remaining]
                remaining -= len(entries)
            for entry in entries:
                yield entry
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    async def watch(
        self,
        prefix: bytes | str = b"",
        *,
        resume_token: bytes | None = None,
        timeout_s: float | None = None,
        progress: bool = False,
        resume_for_s: float = 30.0,
    ) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from now on, or after ``resume_token``; stop iterating to stop.

        Every event carries a ``resume_token``: keep the last one to resume
        later, here or in another process (a token is opaque bytes, valid at
        any PoP of the cluster). When the stream breaks (a disconnect, a PoP
        restart or failure) the watch resumes on its own from the last token,
        at the same PoP or the next one allowed to serve the prefix, without
        gaps or duplicates, for up to ``resume_for_s`` of consecutive failures.
        A token older than the PoP's change feed raises ``WatchTokenExpired``:
        rescan the range, then watch from the scan's ``watch_token``. With
        ``progress`` the idle progress events (``progress`` true, no key) are
        yielded too. ``timeout_s`` bounds the whole watch (None: until closed).
        A prefix spanning placements held by several PoPs streams without
        tokens and is not resumed.
        """
        if True:  # ASYNC
            if not self._connected:
                await self.connect()
        p = codec.to_bytes(prefix, "prefix")
        token = resume_token or b""
        ends_at = None if timeout_s is None else time.monotonic() + timeout_s
        failures, failing_since = 0, 0.0
        while True:
            node = self.topology.route(p)[0] if p else self.topology.nearest()[0]
            left = None if ends_at is None else max(0.001, ends_at - time.monotonic())
            request = kv_pb2.WatchRequest(prefix=p, resume_token=token, initial_progress=True)
            call = self._kv(node).Watch(request, timeout=left, metadata=self._metadata)
            try:
                async for event in call:
                    token = event.resume_token or token
                    failures = 0
                    if progress or not event.progress:
                        yield codec.watch_event(event)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.CANCELLED:
                    return
                failures += 1
                failing_since = failing_since if failures > 1 else time.monotonic()
                if code != grpc.StatusCode.UNAVAILABLE or (
                    time.monotonic() - failing_since > resume_for_s
                ):
                    raise self._error(exc, node) from None
                self.topology.mark_failed(node)
                await _sleep(self._retry.backoff_s(min(failures, 8)))
                continue
            finally:
                call.cancel()
            return

    async def watch_token(
        self, prefix: bytes | str = b"", *, timeout_s: float | None = None
    ) -> bytes:
        """A resume token for ``prefix`` taken now: a watch from it misses nothing after this call.

        The pattern for a consistent copy plus every later change: take the
        token, scan the range, then ``watch(prefix, resume_token=token)``
        (and again after ``WatchTokenExpired``). b"" when the prefix spans
        placements held by several PoPs.
        """
        p = codec.to_bytes(prefix, "prefix")
        req = kv_pb2.ScanRequest(prefix=p, limit=1, keys_only=True)
        resp = await self._call(p or None, "Scan", req, True, timeout_s)
        return bytes(resp.watch_token)


async def _local_pages(entries: Iterable[Entry]) -> AsyncIterator[Entry]:
    """A scan served in-process, with the iterator type of a network scan."""
    for entry in entries:
        yield entry
