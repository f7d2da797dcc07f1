"""edgekv: an edge-native, globally replicated key-value store.

The SDK: ``edgekv.Client`` (sync) and ``edgekv.AsyncClient`` (asyncio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekv._version import __version__
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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """The SDK's names (those of __all__ not defined above), imported on first use: a
    node process imports edgekv (through edgekv.server) and never needs the client's
    own imports (~0.3 s of its start)."""
    if name in __all__:  # defined names never reach __getattr__
        from edgekv import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgekv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
