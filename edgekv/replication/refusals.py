"""What the peer plane refused, by reason: whole calls, and single records dropped.

One :class:`PeerRefusals` per node, shared by the Replication service (calls a
peer made here) and anti-entropy (records a peer sent back here). Metrics read
it as ``edgekv_peer_refused_total{reason}`` and
``edgekv_peer_refused_records_total{reason}``.
"""

from __future__ import annotations

__all__ = ["CALL_REASONS", "RECORD_REASONS", "PeerRefusals"]

# Why a peer call was refused.
CALL_REASONS = (
    "unauthenticated",  # no valid peer credential or certificate
    "identity",  # a valid proof of another node id than the hello claims
    "unknown_peer",  # another cluster, or a node id the cluster file does not list
    "placement",  # digests or a bucket listing of a placement the caller's region may not hold
    "keys",  # records of keys the caller's region may not hold
)
# Why a received record was dropped (the rest of its batch is applied).
RECORD_REASONS = (
    "not_held",  # this node's region may not hold the key
    "not_callers",  # the sending peer's region may not hold the key: it never should have had it
    "not_asked",  # anti-entropy got a record it did not ask for
)


class PeerRefusals:
    """Counters by reason; every reason exists from the start (a scrape sees zeros).

    Written on the node's event loop, read by the metrics thread: the dicts
    never change shape, so a read is a plain lookup of ints.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = dict.fromkeys(CALL_REASONS, 0)
        self.records: dict[str, int] = dict.fromkeys(RECORD_REASONS, 0)

    def call(self, reason: str) -> None:
        self.calls[reason] += 1

    def dropped(self, reason: str, count: int) -> None:
        self.records[reason] += count
