"""edgekv: an edge-native, globally replicated key-value store.

The SDK: ``edgekv.Client`` (sync) and ``edgekv.AsyncClient`` (asyncio).
"""

from __future__ import annotations

from edgekv._version import __version__
from edgekv.client import (
    AsyncClient,
    Client,
    Delete,
    Entry,
    Put,
    Receipt,
    RetryPolicy,
    Staleness,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.errors import (
    ConditionFailed,
    EdgeKVError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WatchTokenExpired,
)
from edgekv.native import ACTIVE as READ_PATH

__all__ = [
    "READ_PATH",
    "AsyncClient",
    "Client",
    "ConditionFailed",
    "Delete",
    "EdgeKVError",
    "Entry",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Put",
    "Receipt",
    "ResourceExhausted",
    "RetryPolicy",
    "Staleness",
    "Unavailable",
    "Version",
    "WatchEvent",
    "WatchTokenExpired",
    "WriteResult",
    "__version__",
]
