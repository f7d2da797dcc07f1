"""Membership and health: the nodes of the cluster file, heartbeats, RTT.

Every node heartbeats every peer on the peer port. A peer is reachable while
its heartbeats succeed; its round-trip time is an EWMA of heartbeat RTTs
(geo-routing picks the nearest allowed PoP by it). Each heartbeat also
estimates the peer's clock offset, and after every round the node's clock
fence is recomputed from them (cluster/clockfence.py). Runs on the node's loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from edgekv.cluster.clockfence import peer_offset_ms, update_fence
from edgekv.storage.clock import HybridClock, wall_ms
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

_RTT_ALPHA = 0.3  # weight of the newest sample in the smoothed RTT


@dataclass
class PeerHealth:
    """What heartbeats tell about one peer. Owned by Membership."""

    node_id: str
    reachable: bool = False
    rtt_ms: float = 0.0  # smoothed; 0 until the first success
    last_seen_monotonic: float = 0.0
    last_error: str = ""
    consecutive_failures: int = 0
    # Latest heartbeat's estimate of the peer's wall clock minus ours, and its +- (RTT/2).
    clock_offset_ms: float = 0.0
    clock_uncertainty_ms: float = 0.0

    def observe_rtt(self, sample_ms: float) -> None:
        self.rtt_ms = (
            sample_ms
            if self.rtt_ms == 0
            else (_RTT_ALPHA * sample_ms + (1 - _RTT_ALPHA) * self.rtt_ms)
        )

    def last_seen_s(self) -> float:
        """Seconds since the peer last answered; -1 if it never did."""
        if not self.last_seen_monotonic:
            return -1.0
        return time.monotonic() - self.last_seen_monotonic


class Membership:
    """Heartbeats to every peer and the health they report."""

    def __init__(
        self,
        *,
        hello: replication_pb2.PeerHello,
        peers: list[str],
        stub_for: Callable[[str], replication_pb2_grpc.ReplicationStub],
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        # Failures in a row before a peer counts as unreachable: one lost
        # heartbeat on a slow link is not an outage.
        failures_to_down: int = 2,
        # This node's clock: its fence follows the peers' clocks (None: no fencing).
        clock: HybridClock | None = None,
    ) -> None:
        self._hello = hello
        self._stub_for = stub_for
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_down = failures_to_down
        self.peers = {peer: PeerHealth(peer) for peer in peers}
        self._clock = clock

    async def heartbeat(self, peer_id: str) -> None:
        """One heartbeat to one peer; updates its health."""
        health = self.peers[peer_id]
        started = time.perf_counter()
        sent_ms = wall_ms()
        try:
            answer = await self._stub_for(peer_id).Heartbeat(
                replication_pb2.HeartbeatRequest(hello=self._hello, sent_at_ms=sent_ms),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            health.consecutive_failures += 1
            health.last_error = f"{exc.code().name}: {exc.details()}"
            if health.reachable and health.consecutive_failures >= self.failures_to_down:
                health.reachable = False
                log.warning("peer %s unreachable: %s", peer_id, health.last_error)
            return
        health.observe_rtt((time.perf_counter() - started) * 1000.0)
        health.clock_offset_ms, health.clock_uncertainty_ms = peer_offset_ms(
            sent_ms, wall_ms(), answer.now_ms
        )
        health.last_seen_monotonic = time.monotonic()
        health.consecutive_failures = 0
        health.last_error = ""
        if not health.reachable:
            health.reachable = True
            log.info("peer %s reachable, rtt %.2f ms", peer_id, health.rtt_ms)

    async def run_heartbeats(self) -> None:
        """Heartbeat all peers every ``interval_s`` (jittered) forever."""
        while True:
            await asyncio.gather(*(self.heartbeat(p) for p in self.peers))
            self.update_clock_fence()
            await asyncio.sleep(self.interval_s * (0.8 + 0.4 * random.random()))

    def update_clock_fence(self) -> None:
        """Recompute this node's clock fence from the reachable peers' latest clock offsets."""
        if self._clock is not None:
            update_fence(
                self._clock,
                [
                    (h.clock_offset_ms, h.clock_uncertainty_ms)
                    for h in self.peers.values()
                    if h.reachable
                ],
            )
