"""SESSION reads and session tokens in the request layer, for every front door.

A call that asks for a level other than LOCAL, or that carries a session
token, comes here from the ``Coordinator`` (a LOCAL call without a token never
does: the default read pays nothing). Here:

- the token is decoded and checked (consistency.py: size, origins); origins
  that are not nodes of this cluster file are dropped (a node removed from the
  cluster has nothing left to wait for);
- a SESSION read of keys this node holds is served here once the applied
  frontier (replication/frontier.py) covers the token, waiting up to
  ``consistency.session_wait_ms`` (at most half the call's time left) for
  replication to catch up; otherwise it is forwarded, with the token, to a PoP
  that may hold the keys, the token's lagging origins first (they have their own
  writes). A forwarded call is never forwarded again: still not covered after
  the wait, it is UNAVAILABLE naming what is missing. Keys pinned elsewhere
  are forwarded as always (residency), and the serving PoP does this check;
- every answer carries the token merged with every version read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from edgekv.cluster.routing import Router
from edgekv.consistency import SESSION, Seen, decode_token, token_of_versions
from edgekv.coordinator.call import Call
from edgekv.coordinator.forwarding import Forwarder
from edgekv.coordinator.results import BatchGetResult, Found, GetResult, ScanResult
from edgekv.coordinator.stitching import split_range
from edgekv.errors import Unavailable
from edgekv.replication.frontier import AppliedFrontier, MetaOf
from edgekv.storage.clock import physical_ms
from edgekv.storage.engine import Engine

DEFAULT_SESSION_WAIT_MS = 300

_R = TypeVar("_R")


class SessionReads:
    """The levels and tokens of reads for one node. Runs on the node's event loop."""

    def __init__(
        self,
        frontier: AppliedFrontier,
        router: Router,
        forwarder: Forwarder,
        *,
        wait_ms: int = DEFAULT_SESSION_WAIT_MS,
    ) -> None:
        self.frontier = frontier
        self._router = router
        self._forwarder = forwarder
        self.wait_s = wait_ms / 1000.0
        self.node_id = router.spec.id

    @classmethod
    def of(cls, engine: Engine, router: Router, forwarder: Forwarder) -> SessionReads:
        """Session reads over a frontier of their own (a node shares one with its peer service)."""
        others = [n.id for n in router.config.nodes if n.id != router.spec.id]
        frontier = AppliedFrontier(MetaOf(engine.meta_family), router.spec.id, engine.clock, others)
        return cls(frontier, router, forwarder)

    # -- the three reads -------------------------------------------------------

    async def get(
        self, key: bytes, call: Call, read: Callable[[bytes, Call], Awaitable[GetResult]]
    ) -> GetResult:
        seen = self._seen(call)
        result: GetResult | None = None
        if call.consistency == SESSION and seen and self._router.is_local(key):
            missing = await self._cover(seen, call)
            if missing:
                allows = self._router.placement.allows
                targets = self._targets(missing, call, key, lambda r: allows(key, r))
                result = await self._forwarded(
                    missing, self._forwarder.get(key, call, targets=targets)
                )
        if result is None:
            result = await read(key, call)
        return result._replace(session_token=_token(seen, (result.found,)))

    async def get_many(
        self,
        keys: Sequence[bytes],
        call: Call,
        read: Callable[[Sequence[bytes], Call], Awaitable[BatchGetResult]],
    ) -> BatchGetResult:
        seen = self._seen(call)
        result: BatchGetResult | None = None
        is_local = self._router.is_local
        if call.consistency == SESSION and seen and any(is_local(k) for k in keys):
            missing = await self._cover(seen, call)
            if missing:
                allows = self._router.placement.allows
                targets = self._targets(
                    missing, call, keys[0], lambda r: all(allows(k, r) for k in keys)
                )
                result = await self._forwarded(
                    missing, self._forwarder.get_many(keys, call, targets=targets)
                )
        if result is None:
            result = await read(keys, call)
        return result._replace(session_token=_token(seen, result.found))

    async def scan(
        self,
        call: Call,
        lo: bytes,
        hi: bytes,
        limit: int,
        keys_only: bool,
        read: Callable[[], Awaitable[ScanResult]],
    ) -> ScanResult:
        """A page of [lo, hi) (``read`` serves it as LOCAL would) under the call's level."""
        seen = self._seen(call)
        result: ScanResult | None = None
        router = self._router
        if call.consistency == SESSION and seen and _held(router, lo, hi, router.region):
            missing = await self._cover(seen, call)
            if missing:
                targets = self._targets(
                    missing, call, lo, lambda r: not split_range(lo, hi, router.placement, r)[1]
                )
                result = await self._forwarded(
                    missing,
                    self._forwarder.scan(lo, hi, limit, keys_only, lo, call, targets=targets),
                )
        if result is None:
            result = await read()
        versions = ((i.timestamp, i.origin) for i in result.items)
        return result._replace(session_token=token_of_versions(versions, seen))

    # -- helpers ----------------------------------------------------------------

    def _seen(self, call: Call) -> Seen:
        """The token's origins this node knows (STRONG reads only merge it: the home
        serves them, coordinator/home.py, and waits for nothing)."""
        if not call.session_token:
            return {}
        seen = decode_token(call.session_token)
        knows = self.frontier.knows
        return {o: ts for o, ts in seen.items() if knows(o)}

    async def _cover(self, seen: Mapping[str, int], call: Call) -> dict[str, int]:
        """What of ``seen`` is still not applied here after waiting (empty: covered)."""
        missing = self.frontier.missing(seen)
        if not missing:
            return missing
        wait_s = self.wait_s
        left_s = call.timeout_s()
        if left_s is not None:
            wait_s = min(wait_s, left_s / 2)
        return await self.frontier.wait(seen, wait_s)

    def _targets(
        self,
        missing: Mapping[str, int],
        call: Call,
        route_key: bytes,
        holds: Callable[[str], bool],
    ) -> list[str]:
        """PoPs to forward to, nearest first, the lagging origins before the rest."""
        if call.forwarded_by is not None:
            raise Unavailable(self.describe(missing, "forwarded here by " + call.forwarded_by))
        router = self._router
        config = router.config
        nearest = router.candidates(route_key)
        nodes = [n for n in nearest if holds(config.node(n).region)]
        nodes.sort(key=lambda n: n not in missing)  # stable: origins first, nearest first
        if not nodes:
            raise Unavailable(self.describe(missing, "no other PoP may hold these keys"))
        return nodes

    async def _forwarded(self, missing: Mapping[str, int], answer: Awaitable[_R]) -> _R:
        """``answer`` of a forwarded SESSION read; Unavailable says what the token needed."""
        try:
            return await answer
        except Unavailable as exc:
            why = f"no PoP it was forwarded to answered ({exc})"
            raise Unavailable(self.describe(missing, why)) from None

    def describe(self, missing: Mapping[str, int], why: str) -> str:
        """UNAVAILABLE's message: which origins lag here, by how much, and how long we waited."""
        parts = []
        for origin, ts in sorted(missing.items()):
            behind_ms = physical_ms(ts) - physical_ms(self.frontier.applied(origin))
            parts.append(f"{origin} (this node is {max(0, behind_ms)} ms behind the token)")
        return (
            f"SESSION read: node {self.node_id} has not applied the session token's writes from "
            f"{', '.join(parts)} after waiting {self.wait_s * 1000:.0f} ms "
            f"(consistency.session_wait_ms) and {why}; retry, or read at the origin"
        )


def _token(seen: Seen, found: Iterable[Found]) -> bytes:
    return token_of_versions(((f[1], f[2]) for f in found if f is not None), seen)


def _held(router: Router, lo: bytes, hi: bytes, region: str) -> bool:
    """Does ``region`` hold any part of [lo, hi)?"""
    return router.everything_local or bool(split_range(lo, hi, router.placement, region)[0])
