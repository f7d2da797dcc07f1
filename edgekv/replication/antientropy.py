"""Anti-entropy: repair whatever log shipping could not, by comparing digests.

Each node periodically (with jitter) syncs with each peer (one sync:
reconcile.py). It repairs a peer past log retention, a node restored from an
old backup, and a brand-new node with an empty data directory. A sync that
fails is tried again within seconds, backing off to the interval; a sync with a
peer that is syncing with this node gives way (syncturns.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from edgekv.aiowait import wait_event
from edgekv.errors import DiskFull
from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S, DEFAULT_MAX_MESSAGE_BYTES
from edgekv.replication.pacer import RepairPacer
from edgekv.replication.reconcile import SyncStats, sync_with_peer
from edgekv.replication.refusals import PeerRefusals
from edgekv.replication.syncturns import SyncTurns, SyncYielded
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

# A failed sync is tried again after this, then twice as long each time (AntiEntropy._failed).
RETRY_FIRST_S = 1.0


@dataclass
class PeerSyncState:
    """Anti-entropy bookkeeping for one peer (owned by the AntiEntropy loop)."""

    # Wall ms at which the last complete sync started (0: none since start). The
    # peer then held everything this node held at that moment, or newer.
    synced_from_ms: int = 0
    last_stats: SyncStats = field(default_factory=SyncStats)
    last_error: str = ""
    syncs: int = 0
    failed_syncs: int = 0  # attempts that ended in an error, since start
    failures_in_a_row: int = 0  # since the last complete sync: sets the retry delay
    retry: asyncio.TimerHandle | None = None  # the one pending re-sync (failed, or gave way)
    pulled_total: int = 0
    pushed_total: int = 0


class AntiEntropy:
    """The periodic, jittered anti-entropy loop of one node.

    ``placements_with(peer_id)`` lists the placements both nodes may
    hold; ``stub_for(peer_id)`` gives a Replication stub for the peer.
    ``trigger`` asks for a sync now (a peer past log retention, a new node).
    ``may_hold(key)`` says whether this node may hold a key; records refused
    for residency are counted in ``refusals``. Every sync moves at most
    ``bytes_per_s`` on average (``pacer``, which the node's peer service shares).
    A sync with a peer that is syncing with this node gives way when the peer
    has the turn (``turns``, fed by the peer service: syncturns.py) and runs
    again later.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        hello: replication_pb2.PeerHello,
        peers: Sequence[str],
        stub_for: Callable[[str], replication_pb2_grpc.ReplicationStub],
        placements_with: Callable[[str], Sequence[bytes]],
        interval_s: float,
        may_hold: Callable[[bytes], bool],
        refusals: PeerRefusals,
        on_synced: Callable[[str, SyncStats], None] | None = None,
        page_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        bytes_per_s: int = DEFAULT_ANTIENTROPY_BYTES_PER_S,
    ) -> None:
        self._engine = engine
        # The node's anti-entropy byte budget, shared with its peer service.
        self.pacer = RepairPacer(bytes_per_s)
        # Which peers are syncing with this node, shared with its peer service.
        self.turns = SyncTurns(hello.node_id)
        self._may_hold = may_hold
        self._refusals = refusals
        self._page_bytes = page_bytes  # byte budget of one sync message (paging.py)
        self._hello = hello
        self._stub_for = stub_for
        self._placements_with = placements_with
        self.interval_s = interval_s
        self._on_synced = on_synced
        self.state = {peer: PeerSyncState() for peer in peers}
        self._due: set[str] = set(peers)  # sync every peer once soon after start
        self._kick = asyncio.Event()
        self._kick.set()
        self.repaired_records = 0

    def trigger(self, peer_id: str | None = None) -> None:
        self._due.update([peer_id] if peer_id else self.state)
        self._kick.set()

    async def sync_peer(self, peer_id: str) -> SyncStats:
        """Sync every shared placement with one peer now."""
        total = SyncStats()
        stub = self._stub_for(peer_id)
        for placement in self._placements_with(peer_id):
            stats = await sync_with_peer(
                self._engine,
                stub,
                self._hello,
                placement,
                may_hold=self._may_hold,
                refusals=self._refusals,
                page_bytes=self._page_bytes,
                pacer=self.pacer,
                check_turn=lambda: self.turns.check(peer_id),
            )
            total.segments_differing += stats.segments_differing
            total.buckets_differing += stats.buckets_differing
            total.pulled += stats.pulled
            total.pushed += stats.pushed
            total.duration_s += stats.duration_s
        return total

    def _failed(self, peer_id: str, error: str, *, retry: bool = True) -> None:
        """Record a failed sync, and try again soon rather than a whole interval later.

        A node that starts before its peers (a cluster's first start, a restart
        during a peer's) would otherwise wait ``interval_s`` (30 s by default) for
        its first complete sync, and until then its backups are not restorable
        (storage/backup.py) and whatever it missed is not repaired. Retries come
        after 1, 2, 4 ... s (jittered); once the delay reaches the interval the
        periodic sweeps take over. ``retry=False``: only those (a full disk here).
        """
        state = self.state[peer_id]
        state.last_error = error
        state.failed_syncs += 1
        state.failures_in_a_row += 1
        delay_s = RETRY_FIRST_S * 2 ** min(state.failures_in_a_row - 1, 30)
        if retry and delay_s < self.interval_s:
            self._retry_in(peer_id, delay_s * (0.5 + random.random() / 2))

    def _retry_in(self, peer_id: str, delay_s: float) -> None:
        """Sync with ``peer_id`` again in ``delay_s``: one such timer per peer."""
        state = self.state[peer_id]
        if state.retry is not None:
            state.retry.cancel()
        state.retry = asyncio.get_running_loop().call_later(delay_s, self.trigger, peer_id)

    async def run_antientropy(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = 0.0  # every peer is due at once (__init__), then every interval
        try:
            while True:
                # A retry or a trigger syncs its peer only; the sweep of every peer
                # keeps its time, so a peer that keeps failing holds up no other.
                await wait_event(self._kick, max(0.0, next_sweep - loop.time()))
                if loop.time() >= next_sweep:
                    self._due.update(self.state)
                    next_sweep = loop.time() + self.interval_s * (0.75 + random.random() / 2)
                self._kick.clear()
                due, self._due = self._due, set()
                for peer_id in sorted(due):
                    await self._sync_one(peer_id)
        finally:  # a stopped node leaves no timer behind
            for state in self.state.values():
                if state.retry is not None:
                    state.retry.cancel()

    async def _sync_one(self, peer_id: str) -> None:
        """One sync with ``peer_id`` in the loop, and its bookkeeping."""
        state = self.state[peer_id]
        started_ms = wall_ms()
        try:
            stats = await self.sync_peer(peer_id)
        except asyncio.CancelledError:
            raise
        except SyncYielded as exc:  # the peer's sync repairs both sides; try later
            log.debug("anti-entropy with %s: %s", peer_id, exc)
            self._retry_in(peer_id, self.turns.active_s)
            return
        except grpc.aio.AioRpcError as exc:
            self._failed(peer_id, f"{exc.code().name}: {exc.details()}")
            log.debug("anti-entropy with %s failed: %s", peer_id, state.last_error)
            return
        except DiskFull as exc:  # logged once by the engine (storage/recovery.py)
            self._failed(peer_id, str(exc), retry=False)  # room here comes back slowly
            return
        except Exception as exc:  # task boundary: log and carry on with the next peer
            self._failed(peer_id, repr(exc))
            log.exception("anti-entropy with %s failed", peer_id)
            return
        self.turns.completed(peer_id)
        state.last_error = ""
        state.failures_in_a_row = 0
        if state.retry is not None:  # not needed any more
            state.retry.cancel()
        state.syncs += 1
        state.synced_from_ms = started_ms
        state.last_stats = stats
        state.pulled_total += stats.pulled
        state.pushed_total += stats.pushed
        self.repaired_records += stats.pulled + stats.pushed
        if stats.pulled or stats.pushed:
            log.info(
                "anti-entropy with %s: %d buckets differed, pulled %d, pushed %d in %.2fs",
                peer_id,
                stats.buckets_differing,
                stats.pulled,
                stats.pushed,
                stats.duration_s,
            )
        if self._on_synced is not None:
            self._on_synced(peer_id, stats)
