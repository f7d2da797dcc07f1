"""Geo-routing: which PoP serves a key this node may not hold, and forwarding to it.

A node outside a key's placement stores nothing for it: it forwards the call
to the nearest node in an allowed region — nearest by measured heartbeat RTT,
falling back to the great-circle distance between region locations for nodes
not measured yet — and fails over to the next one. If none answers, the call
fails with UNAVAILABLE; it never falls back to storing locally. Forwarded calls
carry ``edgekv-forwarded-by`` metadata so a misrouted call is refused instead
of bouncing between nodes. Keys and values of forwarded calls are never logged
at info level, cached or queued for replication here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from edgekv.cluster.geo import great_circle_km
from edgekv.cluster.membership import Membership
from edgekv.cluster.placement import PlacementRules
from edgekv.config.model import ClusterConfig, NodeSpec
from edgekv.errors import DeadlineExceeded, FailedPrecondition, Unavailable, never_sent
from edgekv.v1 import kv_pb2_grpc

log = logging.getLogger(__name__)

FORWARDED_BY = "edgekv-forwarded-by"
DEFAULT_FORWARD_TIMEOUT_S = 10.0
# Codes after which the next allowed PoP is tried; anything else is the answer.
_FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Router:
    """Placement checks and forwarding for one node. Runs on the node's loop."""

    def __init__(
        self,
        config: ClusterConfig,
        self_spec: NodeSpec,
        placement: PlacementRules,
        *,
        membership: Membership | None,
        forward_addresses: Mapping[str, str] | None = None,
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        self.config = config
        self.spec = self_spec
        self.region = self_spec.region
        self.placement = placement
        self.membership = membership
        self._addresses = {
            n.id: (forward_addresses or {}).get(n.id, n.listen)
            for n in config.nodes
            if n.id != self_spec.id
        }
        self._channel_factory = channel_factory or grpc.aio.insecure_channel
        self._stubs: dict[str, kv_pb2_grpc.KVStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._distance_km = {
            r.name: great_circle_km(config.region(self.region).location, r.location)
            for r in config.regions
        }
        # With no placement rules every key is local: skip the lookup entirely.
        self.everything_local = placement.is_global()
        # The key ranges this node may not hold (stitched scans skip them locally).
        self.refused = placement.refused_ranges(self.region)
        self.forwarded_calls = 0

    def is_local(self, key: bytes) -> bool:
        """May this node hold ``key``?"""
        return self.everything_local or self.region in self.placement.regions_for(key)

    def candidates(self, key: bytes) -> list[str]:
        """Nodes that may hold ``key``, nearest first (RTT, then distance)."""
        regions = self.placement.regions_for(key)
        nodes = [n for n in self.config.nodes if n.region in regions and n.id != self.spec.id]
        return sorted((n.id for n in nodes), key=self._distance_rank)

    def _distance_rank(self, node_id: str) -> tuple[int, float]:
        health = self.membership.peers.get(node_id) if self.membership else None
        if health is not None and health.reachable and health.rtt_ms > 0:
            return (0, health.rtt_ms)
        region = self.config.node(node_id).region
        # Unmeasured: ~1 ms of RTT per 100 km is the right order for fibre.
        estimate = self._distance_km[region] / 100.0
        return (1 if health is None or health.reachable else 2, estimate)

    def stub(self, node_id: str) -> kv_pb2_grpc.KVStub:
        stub = self._stubs.get(node_id)
        if stub is None:
            channel = self._channel_factory(self._addresses[node_id])
            self._channels.append(channel)
            stub = self._stubs[node_id] = kv_pb2_grpc.KVStub(channel)
        return stub

    async def forward(
        self,
        method: str,
        request: Any,
        key: bytes,
        *,
        timeout_s: float | None = None,
        targets: Sequence[str] | None = None,
        credentials: str | None = None,
        idempotent: bool = True,
    ) -> Any:
        """Call ``method`` on the nearest reachable node allowed to hold ``key``.

        All attempts share one deadline (``timeout_s`` from now). A node that is
        UNAVAILABLE or ran out of time is skipped for the next. A call that is not
        ``idempotent`` (a write) goes to the next node only when the first was
        never reached (no connection to send it on): once sent, its outcome is
        unknown (it may have been applied, and the answer lost on the way back),
        and sending it again would store the write twice, under two versions;
        Unavailable then says so. Raises Unavailable naming the nodes tried when
        none answers, DeadlineExceeded when the time ran out first.
        """
        tried: list[str] = []
        last_error = ""
        metadata: tuple[tuple[str, str], ...] = ((FORWARDED_BY, self.spec.id),)
        if credentials is not None:  # the caller's token: the target checks it too
            metadata += (("authorization", credentials),)
        deadline = time.monotonic() + (timeout_s or DEFAULT_FORWARD_TIMEOUT_S)
        for node_id in targets if targets is not None else self.candidates(key):
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise DeadlineExceeded(
                    f"the call's deadline passed while forwarding; tried {', '.join(tried)} "
                    f"(last: {last_error})"
                )
            tried.append(node_id)
            call = getattr(self.stub(node_id), method)
            try:
                self.forwarded_calls += 1
                return await call(request, timeout=left_s, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in _FAILOVER_CODES:
                    raise
                if not idempotent and not never_sent(code, exc.details()):
                    raise Unavailable(
                        f"the write was sent to {node_id} and no answer came back ({code.name}: "
                        f"{exc.details()}); it may have been applied there, so it was not sent "
                        "to another node"
                    ) from None
                last_error = f"{node_id}: {code.name}"
                log.debug("forward %s to %s failed: %s", method, node_id, code.name)
        raise self.unavailable(key, tried, last_error)

    def unavailable(self, key: bytes, tried: list[str], last_error: str) -> Unavailable:
        """The error for a call no node allowed to hold ``key`` could serve."""
        regions = ", ".join(sorted(self.placement.regions_for(key)))
        if not tried:
            return Unavailable(f"no node in the key's allowed regions ({regions}) is configured")
        return Unavailable(
            f"no node allowed to hold this key (regions: {regions}) is reachable; "
            f"tried {', '.join(tried)} (last: {last_error})"
        )

    def refuse_misrouted(self, forwarded_by: str | None) -> None:
        """A forwarded call for a key we may not hold: refuse rather than bounce it on."""
        raise FailedPrecondition(
            f"node {self.spec.id} (region {self.region}) may not hold this key and the call was "
            f"already forwarded by {forwarded_by}; the nodes disagree on placement rules"
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
