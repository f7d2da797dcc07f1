"""The SDK's session: the token a client carries from answer to request, and receipts.

One ``Session`` per client, shared by every call, thread and task using it:
each write's version and each SESSION (or STRONG) answer's token are merged
into it (per origin, the greater timestamp), so a read with the SESSION level
sees the client's own writes, and never goes back in time, at any PoP. Merging
is under a lock (the sync client is used from many threads); the token bytes
are encoded only when a call needs them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from edgekv.client._codec import write_result
from edgekv.client._types import WriteResult
from edgekv.consistency import LOCAL, Seen, decode_token, encode_token, level_of, merge_seen
from edgekv.errors import InvalidArgument
from edgekv.v1 import common_pb2, kv_pb2


class Session:
    """A session token under construction; thread-safe."""

    __slots__ = ("_lock", "_seen", "_token", "level")

    def __init__(self, level: str | int | None = None, token: bytes = b"") -> None:
        self.level = level_of(level)  # the client's default read level
        self._lock = threading.Lock()
        self._seen: Seen = decode_token(bytes(token)) if token else {}
        self._token: bytes | None = bytes(token) if token else b""

    @property
    def token(self) -> bytes:
        """The serialized token covering everything observed so far (b"": nothing yet)."""
        token = self._token
        if token is None:
            with self._lock:
                token = self._token = encode_token(self._seen)
        return token

    def observe(self, token: bytes) -> None:
        """Merge a token from an answer, or handed over by another process."""
        if token:
            more = decode_token(token)
            with self._lock:
                before = dict(self._seen)
                if merge_seen(self._seen, more) != before:
                    self._token = None

    def observe_version(self, timestamp: int, origin: str) -> None:
        """Merge one written or read version (cheaper than a token: nothing to decode)."""
        with self._lock:
            if origin and timestamp > self._seen.get(origin, 0):
                self._seen[origin] = timestamp
                self._token = None

    def read_level(self, consistency: str | int | None) -> int:
        """The level of one read: ``consistency`` if given, else the client's default."""
        return self.level if consistency is None else level_of(consistency)

    def stamp(self, request: kv_pb2.GetRequest | kv_pb2.BatchGetRequest | kv_pb2.ScanRequest,
              level: int) -> None:  # fmt: skip
        """Set a non-LOCAL read's level and the session's token on ``request``."""
        if level != LOCAL:
            request.consistency = level  # type: ignore[assignment]
            request.session_token = self.token

    def write_result(
        self, resp: kv_pb2.PutResponse | kv_pb2.DeleteResponse | kv_pb2.WriteResponse
    ) -> WriteResult:
        """The SDK result of a write answer, merged into the session."""
        version = resp.version
        self.observe_version(version.timestamp, version.origin)
        return write_result(resp)


def await_message(
    count: int | None, regions: Sequence[str] | str | None, timeout_ms: int | None
) -> common_pb2.AwaitReplicas | None:
    """The ``AwaitReplicas`` of a write's ``await_replicas``/``await_regions`` (None: none)."""
    if not count and not regions:
        if timeout_ms:
            raise InvalidArgument("await_timeout_ms needs await_replicas or await_regions")
        return None
    if isinstance(regions, str):
        regions = [regions]
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise InvalidArgument(f"await_replicas must be a count of PoPs (>= 0), got {count!r}")
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0
    ):
        raise InvalidArgument(f"await_timeout_ms must be milliseconds (>= 0), got {timeout_ms!r}")
    return common_pb2.AwaitReplicas(
        count=count or 0, regions=list(regions or ()), timeout_ms=timeout_ms or 0
    )


def with_awaits(
    req: Any, count: int | None, regions: Sequence[str] | str | None, timeout_ms: int | None
) -> Any:
    """``req`` (a Put, Delete or Write request) with the write's ``await_replicas`` set."""
    awaited = await_message(count, regions, timeout_ms)
    if awaited is not None:
        req.await_replicas.CopyFrom(awaited)
    return req
