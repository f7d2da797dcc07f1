"""What metrics and the Cluster service may read of a running node.

``Node.start`` builds one :class:`NodeView` once every component exists, so
nothing read here is ever missing, and its readers need not import the node.
Identity and endpoints are fixed at start; every other read takes the
components' live state at the moment of the call and returns a frozen
snapshot, so a scrape or a Status call adds nothing to the request path and
cannot change the node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgekv.cluster.membership import PeerHealth
from edgekv.cluster.routing import Router
from edgekv.replication.antientropy import PeerSyncState
from edgekv.replication.changefeed import ChangeFeed
from edgekv.replication.collector import Collector
from edgekv.replication.handoff import Handoff
from edgekv.replication.pacecontrol import PaceController
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.sender import PeerSender
from edgekv.server.interceptors import InflightLimiter
from edgekv.storage.engine import Engine


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The local store and its clock at one moment."""

    key_count: int  # RocksDB's estimate of stored records
    last_seq: int  # seq of the newest local write
    hlc_timestamp: int  # the clock's last issued or observed timestamp
    sst_bytes: int
    memtable_bytes: int
    max_skew_seen_ms: int  # furthest a peer's timestamp has been ahead of wall time
    max_skew_allowed_ms: int  # max_clock_skew_ms: further ahead is refused
    skew_rejections: int  # remote timestamps refused for clock skew
    clock_fenced: bool  # writes refused: this node's clock runs too far ahead of its peers
    clock_ahead_ms: int  # how far its next timestamp runs ahead of the median peer's clock
    hlc_lead_ms: int  # how far the HLC high-water mark is ahead of the local wall clock
    fenced_writes: int  # writes refused while fenced
    quarantined_held: int  # received records set aside now (too far ahead of the clock)
    quarantined_total: int  # received records set aside since start
    storage_degraded: bool = False  # writes refused: RocksDB failed one (storage/recovery.py)
    storage_reopens: int = 0  # times RocksDB was reopened in place and took writes again
    storage_refused_writes: int = 0  # writes refused while degraded


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One peer as this node sees it at one moment: heartbeats, replication, anti-entropy."""

    peer_id: str
    reachable: bool  # heartbeats succeed
    rtt_ms: float  # smoothed heartbeat round trip; 0 until the first success
    last_seen_s: float  # seconds since the peer last answered; -1 if it never did
    health_error: str  # last heartbeat error ("" once one succeeds)
    connected: bool  # the replication stream is up
    lag_entries: int  # local log entries the peer has not acknowledged
    lag_seconds: float  # age of the oldest local write the peer has not acknowledged
    inflight_bytes: int  # sent and not yet acknowledged
    sender_error: str  # last replication stream error
    pulled_total: int  # records anti-entropy fetched from the peer
    pushed_total: int  # records anti-entropy sent to the peer
    syncs: int  # completed anti-entropy syncs
    failed_syncs: int  # anti-entropy syncs that ended in an error
    synced_from_ms: int  # start of the last complete sync (wall ms; 0: none since start)


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """Dead-record collection so far."""

    collected_total: int  # tombstones and expired records removed for good
    horizon_ms: int  # records dead since before this are collected (0: nothing yet)


@dataclass(frozen=True, slots=True)
class RepairPacing:
    """Anti-entropy's byte budget (replication.antientropy_bytes_per_s) and its use so far."""

    bytes_per_s: int  # the budget; 0 for a node without peers
    bytes_total: int  # listing and record bytes anti-entropy moved through this node
    waited_s_total: float  # time repair work waited for the budget
    # The pace now, which follows the event loop's lateness (replication/pacecontrol.py),
    # how many times it was cut, and the loop probes taken and found late.
    pace_bytes_per_s: int = 0
    cuts_total: int = 0
    loop_probes_total: int = 0
    loop_late_probes_total: int = 0


@dataclass(frozen=True, slots=True)
class PurgeStats:
    """Keys this node may no longer hold (placement rule changes): erased and still here."""

    removed_total: int  # records erased since start, after an owner confirmed them
    kept: int  # refused records still here after the last pass (0: none, or no pass yet)


class NodeView:
    """A read-only window onto one running node, for metrics and Cluster.Status/Members.

    Reads may come from the node's event loop (a Status call) or from the
    metrics HTTP thread (a scrape); each reads plain attributes of the
    components, never a structure that a loop callback rebuilds.
    """

    __slots__ = (
        "_collector", "_engine", "_feed", "_handoff", "_health", "_http_inflight", "_limiter",
        "_metrics_endpoint", "_pace", "_refusals", "_router", "_senders", "_sync",
        "cluster", "endpoint", "http_endpoint", "node_id", "peer_endpoint", "region",
        "sync_writes",
    )  # fmt: skip

    def __init__(
        self,
        *,
        node_id: str,
        region: str,
        cluster: str,
        endpoint: str,
        peer_endpoint: str,
        metrics_endpoint: Callable[[], str],
        sync_writes: bool,
        engine: Engine,
        senders: Mapping[str, PeerSender],
        peer_health: Mapping[str, PeerHealth],
        sync_state: Mapping[str, PeerSyncState],
        collector: Collector,
        router: Router,
        feed: ChangeFeed,
        refusals: PeerRefusals,
        handoff: Handoff | None = None,  # None: tools that start no node
        limiter: InflightLimiter | None = None,
        http_endpoint: str = "",
        http_inflight: Callable[[], int] | None = None,
        pace: PaceController | None = None,  # None: a node without peers
    ) -> None:
        """``senders``, ``peer_health`` and ``sync_state`` each hold every peer (or none)."""
        self.node_id = node_id
        self.region = region
        self.cluster = cluster
        self.endpoint = endpoint  # client port, host as configured
        self.peer_endpoint = peer_endpoint  # "" without peers
        self.sync_writes = sync_writes
        self._metrics_endpoint = metrics_endpoint  # bound after the client port
        self._engine = engine
        self._senders = senders
        self._health = peer_health
        self._sync = sync_state
        self._collector = collector
        self._feed = feed
        self._router = router
        self._refusals = refusals
        self._handoff = handoff
        self._limiter = limiter
        self.http_endpoint = http_endpoint  # the HTTP door, host as configured ("" if none)
        self._http_inflight = http_inflight
        self._pace = pace

    @property
    def metrics_endpoint(self) -> str:
        """host:port of /metrics ("" when not served, or not yet)."""
        return self._metrics_endpoint()

    def engine_stats(self) -> EngineStats:
        engine, clock = self._engine, self._engine.clock
        return EngineStats(
            key_count=engine.property_int("rocksdb.estimate-num-keys"),  # tombstones too
            last_seq=engine.last_seq,
            hlc_timestamp=clock.last,
            sst_bytes=engine.property_int("rocksdb.total-sst-files-size"),
            memtable_bytes=engine.property_int("rocksdb.cur-size-all-mem-tables"),
            max_skew_seen_ms=clock.max_skew_seen_ms,
            max_skew_allowed_ms=clock.max_skew_ms,
            skew_rejections=clock.rejected_count,
            clock_fenced=clock.fence.fenced,
            clock_ahead_ms=clock.fence.ahead_ms,
            hlc_lead_ms=clock.lead_ms(),
            fenced_writes=clock.fence.refused_count,
            quarantined_held=engine.quarantine.held,
            quarantined_total=engine.quarantine.set_aside_total,
            storage_degraded=engine.storage.degraded,
            storage_reopens=engine.storage.reopens_total,
            storage_refused_writes=engine.storage.refused_writes,
        )

    def peer_stats(self) -> list[PeerStats]:
        """Every peer, in cluster-file order."""
        stats = []
        for peer, sender in self._senders.items():
            health, sync = self._health[peer], self._sync[peer]
            stats.append(
                PeerStats(
                    peer_id=peer,
                    reachable=health.reachable,
                    rtt_ms=health.rtt_ms,
                    last_seen_s=health.last_seen_s(),
                    health_error=health.last_error,
                    connected=sender.connected,
                    lag_entries=sender.lag_entries(),
                    lag_seconds=sender.lag_seconds(),
                    inflight_bytes=sender.inflight_bytes,
                    sender_error=sender.last_error,
                    pulled_total=sync.pulled_total,
                    pushed_total=sync.pushed_total,
                    syncs=sync.syncs,
                    failed_syncs=sync.failed_syncs,
                    synced_from_ms=sync.synced_from_ms,
                )
            )
        return stats

    def collector_stats(self) -> CollectorStats:
        collector = self._collector
        return CollectorStats(collector.collected_total, collector.horizon_ms)

    def peer_refusals(self) -> tuple[dict[str, int], dict[str, int]]:
        """Peer calls refused and received records dropped, by reason (copies)."""
        return dict(self._refusals.calls), dict(self._refusals.records)

    def repair_pacing(self) -> RepairPacing:
        pace = self._pace
        if pace is None:
            return RepairPacing(0, 0, 0.0)
        pacer = pace.pacer
        return RepairPacing(
            pace.max_bytes_per_s, pacer.bytes_total, pacer.waited_s_total, pacer.bytes_per_s,
            pace.cuts_total, pace.probes_total, pace.late_probes_total,
        )  # fmt: skip

    def purge_stats(self) -> PurgeStats:
        handoff = self._handoff
        if handoff is None:
            return PurgeStats(0, 0)
        return PurgeStats(handoff.removed_total, handoff.kept)

    @property
    def forwarded_calls(self) -> int:
        """Calls forwarded to a node allowed to hold the key, since start."""
        return self._router.forwarded_calls

    @property
    def watch_streams(self) -> int:
        """Watch subscriptions open on this node's change feed now."""
        return self._feed.watchers

    @property
    def http_inflight(self) -> int:
        """Calls and Watch streams in progress on the HTTP door now (0 without one)."""
        return 0 if self._http_inflight is None else self._http_inflight()

    def client_refusals(self) -> dict[str, int]:
        """Calls refused by a per-client limit since start, by the setting's name."""
        limiter = self._limiter
        if limiter is None:
            return {}
        return {
            "max_inflight_per_client": limiter.rejected,
            "max_watches_per_client": limiter.rejected_streams,
            "max_streams_per_client": limiter.rejected_bidi,
            "max_concurrent_rpcs": limiter.rejected_port,
        }
