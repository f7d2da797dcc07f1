"""Typed results and operations of the SDK (no gRPC or RocksDB imports here).

Every result is a frozen dataclass with slots: cheap to build on the hot path,
hashable, and safe to share between threads. Keys and values in results are
always ``bytes``; operations (:class:`Put`, :class:`Delete`) also accept ``str``,
which is encoded as UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.storage.record import Version

__all__ = [
    "Delete",
    "Entry",
    "Member",
    "NodeStatus",
    "Put",
    "Receipt",
    "Staleness",
    "Version",
    "WatchEvent",
    "WriteResult",
]


@dataclass(frozen=True, slots=True)
class Staleness:
    """How far an embedded read may lag the node whose files it reads.

    ``lag_seq``: RocksDB sequence numbers the node committed that the reader has
    not caught up to yet (0: it has seen every commit the node signalled). One
    write stores several RocksDB keys (data, replication log, digests), each a
    sequence number, so this is a few times the number of writes behind.
    ``lag_ms``: the age of the oldest of those commits, as far as the node's
    change signal shows (0.0 when ``lag_seq`` is 0).
    """

    lag_seq: int
    lag_ms: float


@dataclass(frozen=True, slots=True)
class Entry:
    """A live key as a read returns it (``get``, ``get_many``, ``scan``).

    ``version`` is the (HLC timestamp, origin node id) of the write that stored
    the value; ``expires_at_ms`` is the absolute expiry in Unix milliseconds, 0
    when the value never expires; ``served_by`` is the node that answered. A
    ``scan`` with ``keys_only`` yields entries whose ``value`` is ``b""``.
    ``staleness`` is set when the entry was read in-process from the node's
    files (``embedded=``; ``served_by`` then names that node), None otherwise.
    """

    key: bytes
    value: bytes
    version: Version
    expires_at_ms: int = 0
    served_by: str = ""
    staleness: Staleness | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A PoP that applied a write whose writer awaited replicas, and how long it took."""

    node_id: str
    region: str
    applied_after_ms: float


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of put/delete/write: the version stored and the node that stored it.

    ``session_token`` covers this write (the client also merges it into its own
    session). With ``await_replicas``/``await_regions``: ``receipts`` names the
    PoPs that applied the write, in the order they did, and ``not_applied_by``
    the awaited ones that had not when the wait ended (the write is stored
    either way).
    """

    version: Version
    served_by: str
    session_token: bytes = b""
    receipts: tuple[Receipt, ...] = ()
    not_applied_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Put:
    """A put inside ``write``. ``ttl_ms`` 0 means no expiry; str is encoded as UTF-8.

    ``if_absent`` / ``if_version``: the whole batch is applied only if the key
    has no live value / its live value has exactly this version (checked at
    the key's home; keys without a home refuse conditions).
    """

    key: bytes | str
    value: bytes | str
    ttl_ms: int = 0
    if_absent: bool = False
    if_version: Version | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete inside ``write``; str is encoded as UTF-8 (``if_version`` as for Put)."""

    key: bytes | str
    if_version: Version | None = None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by ``watch``; ``deleted`` for a tombstone, ``local`` if written there.

    ``resume_token`` resumes a watch right after this event (opaque bytes,
    accepted by any PoP of the cluster; b"" where the watch cannot resume). A
    ``progress`` event has no key and only carries a fresh token.
    """

    key: bytes
    value: bytes
    version: Version
    deleted: bool
    expires_at_ms: int
    local: bool
    served_by: str
    resume_token: bytes = b""
    progress: bool = False


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``status()`` reports about the node that answered (Cluster.Status).

    ``key_count`` is RocksDB's estimate (tombstones included); ``read_path`` is
    "cython" or "python"; ``last_seq`` is the node's newest replication-log seq;
    ``hlc_timestamp`` its hybrid-logical-clock high-water mark; ``metrics_endpoint``
    the host:port of its Prometheus endpoint ("" when disabled).
    """

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
    hlc_timestamp: int = 0


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
    # The answering node's replication stream to this node is up (True for self).
    replication_connected: bool = False
