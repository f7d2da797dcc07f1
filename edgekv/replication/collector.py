"""The periodic collection of dead records on one node (rule: storage/tombstones.py).

Every ``interval_s`` (jittered) it computes the collection horizon from the
grace period and the anti-entropy state of every peer, and sweeps the data
off the event loop. While a peer has not completed a sync (down, partitioned,
refusing us) the horizon stays where it was, so nothing that peer might lack
is collected; a warning says which peer holds collection back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

from edgekv.storage import tombstones
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine

log = logging.getLogger(__name__)


class Collector:
    """Collects tombstones and expired records of one engine.

    ``peers_synced_from_ms()`` maps each peer to the wall ms at which its last
    complete anti-entropy sync started (0 if none): AntiEntropy.state.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        grace_s: float,
        interval_s: float,
        peers_synced_from_ms: Callable[[], Mapping[str, int]],
    ) -> None:
        self._engine = engine
        self.grace_ms = int(grace_s * 1000)
        self.interval_s = interval_s
        self._peers_synced_from_ms = peers_synced_from_ms
        self.horizon_ms = tombstones.NEVER
        self.collected_total = 0
        self._started_ms = wall_ms()

    def horizon_now(self) -> int:
        return tombstones.collection_horizon_ms(
            wall_ms(), self.grace_ms, self._peers_synced_from_ms().values()
        )

    async def collect_once(self) -> int:
        """Sweep with the current horizon; returns how many records were removed."""
        horizon = self.horizon_now()
        self._warn_if_held_back(horizon)
        if horizon <= self.horizon_ms:
            return 0  # nothing new can have become collectable
        # Dead here since max(died, arrived here): a sync only carried what we held then.
        removed = await asyncio.to_thread(
            self._engine.collection.collect_dead, horizon, arrived_before_ms=horizon
        )
        self.horizon_ms = horizon
        self.collected_total += removed
        if removed:
            log.info("collected %d dead records (dead since before %d ms)", removed, horizon)
        return removed

    def _warn_if_held_back(self, horizon: int) -> None:
        now = wall_ms()
        if now - horizon <= 2 * self.grace_ms or now - self._started_ms <= self.grace_ms:
            return
        synced = self._peers_synced_from_ms()
        laggard = min(synced, key=lambda peer: synced[peer])
        since = synced[laggard]
        log.warning(
            "tombstone collection held back: peer %s %s; tombstones and expired records "
            "accumulate until it syncs (or is removed from the cluster file)",
            laggard,
            "has not completed an anti-entropy sync since this node started"
            if since == 0
            else f"last completed an anti-entropy sync {(now - since) / 1000:.0f} s ago",
        )

    async def run_collector(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * (0.75 + random.random() / 2))
            try:
                await self.collect_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # task boundary: a failed sweep is retried next interval
                log.exception("collecting dead records failed")
