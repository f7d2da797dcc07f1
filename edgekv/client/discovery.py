"""Topology discovery and client-side geo-routing.

The client asks a seed node for Cluster.Members (nodes, regions, placement
rules), measures its own round-trip time to every node, and then sends each
call to the nearest node allowed to hold the call's key — so pinned keys skip
the forwarding hop — failing over to the next nearest when one is down.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.v1 import cluster_pb2

UNMEASURED_RTT_MS = 1e9


@dataclass
class NodeRoute:
    node_id: str
    region: str
    endpoint: str
    rtt_ms: float = UNMEASURED_RTT_MS
    failures: int = 0  # consecutive failed calls; pushes the node back in the order


class Topology:
    """Where to send each key. Built from Members; ``rtt_ms`` filled by probes."""

    def __init__(self, nodes: Sequence[NodeRoute], rules: PlacementRules) -> None:
        self.nodes = list(nodes)
        self.rules = rules
        self._global = rules.is_global()  # every key anywhere: route() is the nearest order
        self._ordered: list[NodeRoute] = list(nodes)
        self._by_regions: dict[frozenset[str], list[NodeRoute]] = {}
        self.reorder()

    @classmethod
    def from_members(
        cls,
        resp: cluster_pb2.MembersResponse,
        overrides: Mapping[str, str] | None = None,
        *,
        http: bool = False,
    ) -> Topology:
        """The nodes of ``resp`` at their gRPC endpoints, or with ``http`` at
        their HTTP doors (nodes without one are left out: any node forwards)."""
        overrides = overrides or {}
        nodes = [
            NodeRoute(m.node_id, m.region, endpoint)
            for m in resp.members
            if (endpoint := overrides.get(m.node_id, m.http_endpoint if http else m.endpoint))
        ]
        rules = PlacementRules(
            (PlacementRule(r.prefix, tuple(r.regions), r.home) for r in resp.placement),
            (r.name for r in resp.regions),
        )
        return cls(nodes, rules)

    @classmethod
    def static(cls, endpoints: Sequence[str]) -> Topology:
        """No discovery: the endpoints in the order given, every key allowed anywhere."""
        nodes = [NodeRoute(ep, "", ep, rtt_ms=float(i)) for i, ep in enumerate(endpoints)]
        return cls(nodes, PlacementRules((), ()))

    def reorder(self) -> None:
        """Recompute the nearest-first orders after RTTs or failures changed."""
        self._ordered = sorted(self.nodes, key=lambda n: (n.failures > 0, n.rtt_ms))
        self._by_regions.clear()

    def prefer(self, node_id: str) -> None:
        """Make ``node_id`` the nearest node (RTT 0), e.g. the one whose files the client reads.

        The client then writes where it reads in-process, so it reads its own writes.
        Call ``reorder`` afterwards.
        """
        for node in self.nodes:
            if node.node_id == node_id:
                node.rtt_ms = 0.0

    def record_rtt(self, node: NodeRoute, rtt_ms: float) -> None:
        node.rtt_ms = rtt_ms if node.rtt_ms == UNMEASURED_RTT_MS else 0.5 * (node.rtt_ms + rtt_ms)

    def nearest(self) -> list[NodeRoute]:
        return self._ordered

    def route(self, key: bytes, write: bool = False) -> list[NodeRoute]:
        """Nodes to try for ``key``: allowed ones nearest first, then the others.

        With ``write``, a homed key's home comes first: it applies every write
        to the key, and any other node would only forward it there.
        """
        if self._global:
            return self._ordered
        if write and self.rules.has_homes and (home := self.rules.home_of(key)):
            return sorted(self.route(key), key=lambda n: n.node_id != home)
        regions = self.rules.regions_for(key)
        order = self._by_regions.get(regions)
        if order is None:
            allowed = [n for n in self._ordered if n.region in regions]
            # Others last: any node forwards to an allowed one, if all else fails.
            order = allowed + [n for n in self._ordered if n.region not in regions]
            self._by_regions[regions] = order
        return order

    def mark_failed(self, node: NodeRoute) -> None:
        node.failures += 1
        self.reorder()

    def mark_ok(self, node: NodeRoute) -> None:
        if node.failures:
            node.failures = 0
            self.reorder()


def timed(fn: object) -> float:
    """Milliseconds one call of ``fn()`` takes."""
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000.0
