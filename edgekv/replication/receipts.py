"""Propagation receipts: a write that waits until named PoPs have applied it.

A writer may ask (``AwaitReplicas``) for a count of other PoPs, and/or one PoP
in each of some regions, to apply its write before the answer. The writing
node knows, per peer, the highest seq the peer acknowledged (``PeerSender``),
and a peer acknowledges a batch only once it is durable there; so the write is
applied at a peer once that peer acknowledged the write's seq. Waiting is
event-driven (a future per peer that the ack resolves). When the wait ends the
write stays acknowledged (it is durable here); the answer lists the PoPs that
had applied it, in the order they did, and those that had not.

Only PoPs that may hold every key of the write count (data residency: a PoP
that may not hold a key acknowledges past it without ever storing it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from edgekv.cluster.placement import PlacementRules
from edgekv.errors import InvalidArgument

# Without timeout_ms and without a call deadline, a write waits this long.
DEFAULT_AWAIT_MS = 5_000
# The longest wait a write may ask for.
MAX_AWAIT_MS = 60_000
# What a wait bounded by the call's deadline leaves for the answer to travel back.
ANSWER_MARGIN_S = 0.05


@dataclass(frozen=True, slots=True)
class AwaitSpec:
    """The plain value of ``edgekv.v1.AwaitReplicas``."""

    count: int = 0
    regions: tuple[str, ...] = ()
    timeout_ms: int = 0

    def __bool__(self) -> bool:
        return bool(self.count or self.regions)


class Receipt(NamedTuple):
    """One PoP that applied the write, and how long after it was durable here."""

    node_id: str
    region: str
    applied_after_ms: float


class Receipts(NamedTuple):
    """What a waited-for write answers: receipts in apply order, and who had not applied it."""

    receipts: tuple[Receipt, ...]
    not_applied_by: tuple[str, ...]


class _Call(Protocol):
    def timeout_s(self) -> float | None: ...


class _Sender(Protocol):
    def acked_future(self, seq: int) -> asyncio.Future[float]: ...


class ReceiptWaiter:
    """Validates ``AwaitSpec``s and waits for peers' acknowledgements. Runs on the node's loop.

    ``senders`` maps peer ids to their senders (empty on a single node);
    ``node_regions`` maps every node id of the cluster file to its region.
    """

    def __init__(
        self,
        node_id: str,
        senders: Mapping[str, _Sender],
        node_regions: Mapping[str, str],
        placement: PlacementRules,
    ) -> None:
        self._node_id = node_id
        self._senders = senders
        self._regions = dict(node_regions)
        self._placement = placement

    def eligible(self, spec: AwaitSpec, keys: Sequence[bytes]) -> list[str]:
        """The peers that may hold every key, after checking ``spec`` against them.

        Raises InvalidArgument naming the value and the limit: a count larger
        than those peers, an unknown region, a region that may not hold the
        keys or has no such peer, a timeout past MAX_AWAIT_MS.
        """
        if spec.timeout_ms > MAX_AWAIT_MS:
            raise InvalidArgument(
                f"await_replicas.timeout_ms is {spec.timeout_ms}; the limit is {MAX_AWAIT_MS}"
            )
        allows = self._placement.allows
        peers = [
            node
            for node, region in self._regions.items()
            if node != self._node_id and all(allows(k, region) for k in keys)
        ]
        if spec.count > len(peers):
            raise InvalidArgument(
                f"await_replicas.count is {spec.count}; at most {len(peers)} other PoPs may hold "
                f"{'this key' if len(keys) == 1 else 'these keys'}"
                f"{' (' + ', '.join(peers) + ')' if peers else ''}"
            )
        known = set(self._regions.values())
        unknown = sorted(r for r in spec.regions if r not in known)
        if unknown:
            raise InvalidArgument(
                f"await_replicas.regions names unknown regions {', '.join(unknown)}; the "
                f"cluster's regions are {', '.join(sorted(known))}"
            )
        refused = sorted(r for r in spec.regions if not any(allows(k, r) for k in keys))
        if refused:
            allowed = ", ".join(sorted(self._placement.regions_for(keys[0])))
            raise InvalidArgument(
                f"await_replicas.regions names {', '.join(refused)}, which may not hold "
                f"{'this key' if len(keys) == 1 else 'these keys'} (allowed regions: {allowed})"
            )
        empty = sorted(r for r in spec.regions if not any(self._regions[p] == r for p in peers))
        if empty:
            raise InvalidArgument(
                f"await_replicas.regions names {', '.join(empty)}, which has no other PoP that "
                "may hold the write"
            )
        return peers

    async def wait(
        self, spec: AwaitSpec, peers: Sequence[str], seq: int, durable_at: float, timeout_s: float
    ) -> Receipts:
        """Wait until ``spec`` holds for the write at ``seq`` or ``timeout_s`` passes.

        ``peers`` comes from ``eligible``; ``durable_at`` is the
        ``time.monotonic()`` at which the write became durable here.
        """
        futures: dict[asyncio.Future[float], str] = {}
        for peer in peers:
            sender = self._senders.get(peer)
            if sender is not None:
                futures[sender.acked_future(seq)] = peer
        applied: list[tuple[float, str]] = []
        pending = set(futures)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    applied.append((future.result(), futures[future]))
                if self._satisfied(spec, [peer for _, peer in applied]):
                    break
                left_s = deadline - time.monotonic()
                if not pending or left_s <= 0:
                    break
                await asyncio.wait(pending, timeout=left_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in pending:
                future.cancel()
        applied.sort()
        receipts = tuple(
            Receipt(peer, self._regions[peer], max(0.0, (at - durable_at) * 1000.0))
            for at, peer in applied
        )
        done = {peer for _, peer in applied}
        if self._satisfied(spec, list(done)):
            return Receipts(receipts, ())
        missing = [p for p in peers if p not in done]
        if spec.count <= len(done):  # only regions are short: name their PoPs
            short = {r for r in spec.regions if not any(self._regions[p] == r for p in done)}
            missing = [p for p in missing if self._regions[p] in short]
        return Receipts(receipts, tuple(missing))

    async def confirm(
        self, spec: AwaitSpec, peers: Sequence[str], seq: int, call: _Call
    ) -> Receipts:
        """The receipts of the write at ``seq``, durable now, waited for as ``spec`` says."""
        durable_at = time.monotonic()
        left_s = call.timeout_s()
        if left_s is not None:
            left_s = max(0.001, left_s - ANSWER_MARGIN_S)  # leave time to answer
        return await self.wait(spec, peers, seq, durable_at, timeout_s_of(spec, left_s))

    def _satisfied(self, spec: AwaitSpec, done: Sequence[str]) -> bool:
        if len(done) < spec.count:
            return False
        regions = {self._regions[p] for p in done}
        return all(r in regions for r in spec.regions)


def timeout_s_of(spec: AwaitSpec, call_left_s: float | None) -> float:
    """How long to wait: ``timeout_ms``, else the call's time left, else DEFAULT_AWAIT_MS."""
    if spec.timeout_ms:
        wait_s = spec.timeout_ms / 1000.0
        return wait_s if call_left_s is None else min(wait_s, call_left_s)
    return call_left_s if call_left_s is not None else DEFAULT_AWAIT_MS / 1000.0
