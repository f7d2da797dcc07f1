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
    RetryPolicy,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.errors import (
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
    "Delete",
    "EdgeKVError",
    "Entry",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Put",
    "ResourceExhausted",
    "RetryPolicy",
    "Unavailable",
    "Version",
    "WatchEvent",
    "WatchTokenExpired",
    "WriteResult",
    "__version__",
]
