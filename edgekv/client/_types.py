"""Typed results and operations of the SDK (no gRPC or RocksDB imports here)."""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.storage.record import Version

__all__ = ["Delete", "Entry", "Member", "NodeStatus", "Put", "Version", "WatchEvent", "WriteResult"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A live key as a read returns it. ``expires_at_ms`` is 0 when it never expires."""

    key: bytes
    value: bytes
    version: Version
    expires_at_ms: int = 0
    served_by: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of put/delete/write: the version stored and the node that stored it."""

    version: Version
    served_by: str


@dataclass(frozen=True, slots=True)
class Put:
    """A put inside ``write``: ``ttl_ms`` 0 means no expiry."""

    key: bytes | str
    value: bytes | str
    ttl_ms: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete inside ``write``."""

    key: bytes | str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by ``watch``; ``deleted`` for a tombstone, ``local`` if written there."""

    key: bytes
    value: bytes
    version: Version
    deleted: bool
    expires_at_ms: int
    local: bool
    served_by: str


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    region: str
    cluster: str
    uptime_s: float
    key_count: int
    read_path: str
    server_version: str
    last_seq: int
    sync_writes: bool
    metrics_endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """A node as the answering node sees it (Cluster.Members)."""

    node_id: str
    region: str
    endpoint: str
    is_self: bool
    reachable: bool
    rtt_ms: float
    lag_entries: int
    lag_seconds: float
    last_error: str
