"""The edgekv Python SDK: ``Client`` (sync) and ``AsyncClient`` (asyncio).

Both have the same methods and results::

    with edgekv.Client("127.0.0.1:7101") as kv:
        kv.put("user/1", b"alice", ttl_ms=60_000)   # -> WriteResult(version, served_by)
        entry = kv.get("user/1")                    # -> Entry | None (None: absent)
        kv.get_many(["user/1", "user/2"])           # -> [Entry | None, ...] in request order
        kv.write([Put("a", "1"), Delete("b")])      # atomic, one version
        for e in kv.scan("user/", page_size=500):   # follows page tokens lazily
            ...

``get`` returns an :class:`Entry` (key, value, version, expires_at_ms,
served_by) or None when the key is absent, deleted or expired. Keys and values
are bytes; str is accepted and encoded as UTF-8. Every error is an
:class:`edgekv.EdgeKVError` subclass (``edgekv.errors``).
"""

from edgekv.client._base import ClientClosed
from edgekv.client._types import (
    Delete,
    Entry,
    Member,
    NodeStatus,
    Put,
    Receipt,
    Staleness,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.client.aio import AsyncClient
from edgekv.client.retry import RetryPolicy
from edgekv.client.sync import Client
from edgekv.errors import ConditionFailed, EdgeKVError

__all__ = [
    "AsyncClient",
    "Client",
    "ClientClosed",
    "ConditionFailed",
    "Delete",
    "EdgeKVError",
    "Entry",
    "Member",
    "NodeStatus",
    "Put",
    "Receipt",
    "RetryPolicy",
    "Staleness",
    "Version",
    "WatchEvent",
    "WriteResult",
]
