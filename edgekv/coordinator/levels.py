"""Wiring of read levels and receipts into a node's request layer (used by server/node.py).

Kept apart so the node's wiring stays one line per component: the applied
frontier is shared by the peer service (which advances it) and the request
layer (whose SESSION reads wait on it); receipts wait on the peer senders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgekv.cluster.routing import Router
from edgekv.config.model import ClusterConfig
from edgekv.coordinator.forwarding import GrpcForwarder
from edgekv.coordinator.session import SessionReads
from edgekv.replication.frontier import AppliedFrontier, MetaOf
from edgekv.replication.receipts import ReceiptWaiter
from edgekv.replication.sender import PeerSender
from edgekv.storage.engine import Engine


class _PeerPlane(Protocol):
    @property
    def frontier(self) -> AppliedFrontier: ...


def new_frontier(
    engine: Engine, peers: list[str], on_gap: Callable[[str], None]
) -> AppliedFrontier:
    """The node's applied frontier over ``peers`` (restored from the meta column family)."""
    return AppliedFrontier(MetaOf(engine.meta_family), engine.node_id, engine.clock, peers, on_gap)


def request_levels(
    engine: Engine,
    router: Router,
    config: ClusterConfig,
    replication: _PeerPlane | None,
    senders: Mapping[str, PeerSender],
) -> dict[str, Any]:
    """The Coordinator's ``forwarder``, ``session`` and ``receipts`` keyword arguments."""
    forwarder = GrpcForwarder(router)
    wait_ms = config.consistency.session_wait_ms
    if replication is None:  # no peers: only this node's own writes to cover
        frontier = new_frontier(engine, [], lambda _origin: None)
    else:
        frontier = replication.frontier
    regions = {n.id: n.region for n in config.nodes}
    return {
        "forwarder": forwarder,
        "session": SessionReads(frontier, router, forwarder, wait_ms=wait_ms),
        "receipts": ReceiptWaiter(router.spec.id, senders, regions, router.placement),
    }
