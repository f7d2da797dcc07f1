"""Clock fencing: a node whose clock runs ahead of its peers stops acknowledging writes.

Last-writer-wins orders writes by HLC timestamp, so a node whose clock runs
ahead would win every conflict it takes part in, and its peers set its
records aside (``Engine.apply_many``'s quarantine) until their own clocks
catch up. Rather than acknowledge such writes, the node refuses them
(FAILED_PRECONDITION, ``ClockFenced``) while it is out of bounds, and says so
in metrics and its log. Reads, replication and forwarding go on.

**The estimate.** Each heartbeat gives, on the local wall clock, the time it
was sent and the time its answer came back, and the peer's wall clock when it
answered (``HeartbeatResponse.now_ms``). The peer answered somewhere between
the two, so its clock's offset from ours is ``now_ms - (sent + received) / 2``,
give or take half the round trip. To never fence a healthy node on noise, each
peer is taken at the end of that interval most favourable to this node (as far
ahead as it may be: offset + RTT/2).

**Ahead of its peers** means ahead of the *median* of the reachable peers'
clocks: with one peer, that peer (two nodes cannot tell which clock is wrong,
so the one ahead stops: its records are the ones the other would set aside);
with two, their midpoint; with many, a minority of wrong clocks can neither
fence a healthy node nor shield a bad one. With no reachable peer nothing is
compared and the node is not fenced: a partitioned or lone node keeps taking
writes (if its clock drifted meanwhile, its peers quarantine those records
when they meet again). Until its first heartbeat round after start (one
interval) a node has compared nothing yet and is not fenced either.

**What runs ahead** is what the node would put in a new timestamp: its wall
clock, or its HLC high-water mark when that is ahead of the wall clock by more
than the bound. The HLC must stay monotonic (a node never issues a timestamp
below one it issued: its earlier writes would then lose to its later ones),
so after a bad clock is fixed the node keeps issuing timestamps from the old
high-water mark until wall time catches up; it stays fenced until then. A
peer's timestamps can push the HLC at most ``max_clock_skew_ms`` ahead of our
wall clock (``HybridClock.observe``), so a lead beyond the bound can only come
from this node's own past clock, and a fast but acceptable peer never fences
the nodes that saw its writes.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence

from edgekv.storage.clock import HybridClock

log = logging.getLogger(__name__)


def peer_offset_ms(sent_ms: int, received_ms: int, peer_now_ms: int) -> tuple[float, float]:
    """(offset of the peer's clock from ours, its uncertainty) from one heartbeat, in ms."""
    return peer_now_ms - (sent_ms + received_ms) / 2, max(0, received_ms - sent_ms) / 2


def ahead_of_peers_ms(
    lead_ms: int, peer_offsets: Sequence[tuple[float, float]], max_skew_ms: int
) -> float | None:
    """How far this node's next timestamp runs ahead of the median reachable peer (None: no peer).

    ``lead_ms`` is how far the HLC high-water mark is ahead of local wall time;
    ``peer_offsets`` holds (offset, uncertainty) per reachable peer
    (``peer_offset_ms``). Negative when this node is behind.
    """
    if not peer_offsets:
        return None
    median_peer = statistics.median(offset + uncertainty for offset, uncertainty in peer_offsets)
    issue_lead = lead_ms if lead_ms > max_skew_ms else 0
    return issue_lead - median_peer


def update_fence(clock: HybridClock, peer_offsets: Sequence[tuple[float, float]]) -> None:
    """Recompute ``clock.fence`` from the latest heartbeats; logs when it changes."""
    fence = clock.fence
    lead = clock.lead_ms()
    if lead > fence.max_skew_ms >= fence.hlc_lead_ms:
        log.warning(
            "this node's hybrid clock is %d ms ahead of its wall clock (was the clock stepped "
            "back?); timestamps keep counting from it, so they stay ahead until wall time "
            "catches up", lead,
        )  # fmt: skip
    ahead = ahead_of_peers_ms(lead, peer_offsets, fence.max_skew_ms)
    fence.hlc_lead_ms = lead
    fence.peers = len(peer_offsets)
    fence.ahead_ms = 0 if ahead is None else round(ahead)
    fenced = ahead is not None and ahead > fence.max_skew_ms
    if fenced and not fence.fenced:
        log.warning(
            "clock fenced: this node's timestamps run %d ms ahead of its peers (median of %d; "
            "HLC %d ms ahead of the wall clock); the limit is %d ms "
            "(replication.max_clock_skew_ms); writes are refused until it is back in bounds",
            fence.ahead_ms, fence.peers, lead, fence.max_skew_ms,
        )  # fmt: skip
    elif fence.fenced and not fenced:
        log.info("clock back in bounds (%d ms ahead of its peers); writes accepted again",
                 fence.ahead_ms)  # fmt: skip
    fence.fenced = fenced
