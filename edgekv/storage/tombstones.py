"""When a dead record (tombstone or expired value) may be collected.

A delete writes a tombstone and a TTL leaves an expired record: both must stay
versions for a while, because removing one too early lets a node that missed
it hand the older value back through anti-entropy (a resurrection). The rule,
Cassandra's gc_grace with a replication gate on top:

* a record is *dead since* its tombstone's wall-clock time, or its expiry;
  on a node, it is *dead here since* the later of that and the time it
  arrived here (collection.py keeps arrival times): a sync only carries what
  the node held when it started, so a record that reached this node after
  dying is safe to forget only once every peer synced after it arrived;
* the **collection horizon** is ``now - grace``, but never later than the
  start of the last complete anti-entropy sync with *every* peer. A sync that
  started after a record was dead here and finished without error leaves the peer
  holding that record or a newer version, so no peer can still offer the value
  it replaced. A peer that has not synced (down, cut off, quarantined by TLS)
  holds the horizon back, and with it collection on this node;
* records dead here since before the horizon are removed from data and
  digests, and an incoming record dead since before the horizon is never
  stored (the one place the death time alone decides: judging it by its
  arrival, now, would keep it, and two nodes would then hand a record back and
  forth forever, each having collected it at a different moment): if it
  wins over the stored version that version is removed, otherwise nothing
  happens. Every node therefore converges to the same data, with or without
  the dead records, and digests of synced nodes agree.

A node restored from a backup older than the grace period could still hold
values whose tombstones were collected; ``edgekv restore`` refuses such a
backup (see backup.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from edgekv.storage import record as rec
from edgekv.storage.clock import physical_ms

NEVER = 0  # horizon that collects nothing


def dead_since_ms(record: bytes) -> int | None:
    """Wall-clock ms from which ``record`` reads as absent; None if it never will.

    ``record`` must be a valid record (the engine validates before calling); a
    truncated one (storage corruption) never reads as dead, so a sweep skips it
    instead of failing.
    """
    if len(record) <= rec.OFF_ORIGIN:
        return None
    if rec.is_tombstone(record):
        return physical_ms(rec.timestamp_of(record))
    return rec.expiry_of(record)


def reads_live(record: bytes, now_ms: int) -> bool:
    """Whether a read at ``now_ms`` returns ``record``'s value."""
    if rec.is_tombstone(record):
        return False
    expiry = rec.expiry_of(record)
    return expiry is None or expiry > now_ms


def collectable(record: bytes, horizon_ms: int) -> bool:
    """Whether ``record`` is dead since before ``horizon_ms`` (0: never)."""
    since = dead_since_ms(record)
    return since is not None and since < horizon_ms


def collection_horizon_ms(now_ms: int, grace_ms: int, peers_synced_from_ms: Iterable[int]) -> int:
    """``now - grace``, held back to the oldest peer's last complete sync start.

    ``peers_synced_from_ms`` is, for every peer that may hold any of this
    node's data, the wall time at which its last successful anti-entropy sync
    started (0 when it has not synced since this node started).
    """
    horizon = now_ms - grace_ms
    for synced_from in peers_synced_from_ms:
        horizon = min(horizon, synced_from)
    return max(horizon, NEVER)
