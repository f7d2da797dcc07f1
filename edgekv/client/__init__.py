"""The edgekv Python SDK: ``Client`` (sync) and ``AsyncClient`` (asyncio)."""

from edgekv.client._types import (
    Delete,
    Entry,
    Member,
    NodeStatus,
    Put,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.client.aio import AsyncClient
from edgekv.client.retry import RetryPolicy
from edgekv.client.sync import Client
from edgekv.errors import EdgeKVError

__all__ = [
    "AsyncClient",
    "Client",
    "Delete",
    "EdgeKVError",
    "Entry",
    "Member",
    "NodeStatus",
    "Put",
    "RetryPolicy",
    "Version",
    "WatchEvent",
    "WriteResult",
]
