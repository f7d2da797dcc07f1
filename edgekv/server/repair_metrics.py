"""The anti-entropy metrics of a node: repairs and syncs per peer, and the repair pace.

Part of the scrape of metrics.py (its node-state collector yields these), kept
apart because the pace now has a controller of its own to show
(replication/pacecontrol.py): the pace in effect, how often it was cut, and
the event-loop probes it follows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edgekv.server.view import PeerStats, RepairPacing


def repair_families(peers: Sequence[PeerStats], pacing: RepairPacing) -> Iterator[Any]:
    """Metric families of anti-entropy, read from ``peers`` and ``pacing`` at scrape time."""
    repairs = CounterMetricFamily(
        "edgekv_antientropy_repaired_records",
        "Records anti-entropy pulled from or pushed to a peer.", labels=["peer", "direction"],
    )  # fmt: skip
    syncs = CounterMetricFamily(
        "edgekv_antientropy_syncs", "Completed anti-entropy syncs with a peer.", labels=["peer"]
    )
    failed = CounterMetricFamily(
        "edgekv_antientropy_failed_syncs",
        "Anti-entropy syncs with a peer that ended in an error (retried after 1, 2, 4 ... s, "
        "then every replication.antientropy_interval_s).", labels=["peer"],
    )  # fmt: skip
    synced_from = GaugeMetricFamily(
        "edgekv_antientropy_synced_from_timestamp_seconds",
        "Start of the last complete anti-entropy sync with a peer (0: none since start).",
        labels=["peer"],
    )  # fmt: skip
    for peer in peers:
        repairs.add_metric([peer.peer_id, "pulled"], peer.pulled_total)
        repairs.add_metric([peer.peer_id, "pushed"], peer.pushed_total)
        syncs.add_metric([peer.peer_id], peer.syncs)
        failed.add_metric([peer.peer_id], peer.failed_syncs)
        synced_from.add_metric([peer.peer_id], peer.synced_from_ms / 1000.0)
    yield from (repairs, syncs, failed, synced_from)
    yield CounterMetricFamily(
        "edgekv_antientropy_bytes", "Listing and record bytes anti-entropy moved through "
        "this node, in and out (paced at replication.antientropy_bytes_per_s).",
        value=pacing.bytes_total,
    )  # fmt: skip
    yield CounterMetricFamily(
        "edgekv_antientropy_paced_seconds",
        "Time anti-entropy work waited for its byte budget (pacing a repair).",
        value=pacing.waited_s_total,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "edgekv_antientropy_pace_bytes_per_second",
        "The anti-entropy pace in effect: cut while the event loop runs late, raised back "
        "to replication.antientropy_bytes_per_s (0: a node without peers).",
        value=pacing.pace_bytes_per_s,
    )  # fmt: skip
    yield CounterMetricFamily(
        "edgekv_antientropy_pace_cuts",
        "Times the anti-entropy pace was cut because the event loop ran late "
        "(more than replication.antientropy_lag_target_ms, too often in a window).",
        value=pacing.cuts_total,
    )  # fmt: skip
    yield CounterMetricFamily(
        "edgekv_event_loop_probes", "Wake-ups of the probe of the event loop's lateness "
        "(100 a second on a node with peers).", value=pacing.loop_probes_total,
    )  # fmt: skip
    yield CounterMetricFamily(
        "edgekv_event_loop_late_probes", "Probe wake-ups later than "
        "replication.antientropy_lag_target_ms: the loop was busy, or the process was "
        "kept off the CPU.", value=pacing.loop_late_probes_total,
    )  # fmt: skip
