"""Home-mode prefixes: one node orders every write to a prefix; conditions and STRONG reads.

A placement rule may name a ``home`` node (config/homes.py). Every write to a
key under it -- Put, Delete or Write, from any door, whichever PoP receives it
-- is applied by the home alone, in the order of the home's write lock, and
replicates from there as usual; other PoPs keep serving LOCAL reads from their
replicas. That single order is what makes these sound:

- **conditions** (``if_absent``, ``if_version``: storage/conditions.py) are
  checked by the home's engine under its write lock, atomically with the write;
  on a key without a home they are refused (multi-writer keys have no single
  order to compare against);
- **STRONG reads** are served by the home from its own store. A write is
  acknowledged only once it is durable at the home, and the home is the only
  node that applies writes to the key, so a read there sees every acknowledged
  write: one key is linearizable (with ``sync_writes: true`` also across a
  machine crash of the home; without it, a crash may lose the last moments).

A non-home node never applies a homed write: it forwards the call to the home
(and only there: no failover to another node, which would fork the order). When
the home cannot be reached the write fails with UNAVAILABLE naming the home;
when it was sent and no answer came back the outcome is unknown and it is not
resent (Router.forward, errors.never_sent). A call already forwarded to a node
that is not the key's home is refused, never bounced on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from edgekv.cluster.routing import Router
from edgekv.coordinator.call import Call
from edgekv.coordinator.forwarding import Forwarder
from edgekv.coordinator.results import BatchGetResult, Found, GetResult, ScanResult, WriteAck
from edgekv.errors import FailedPrecondition, InvalidArgument, Unavailable
from edgekv.keyrange import prefix_range
from edgekv.replication.receipts import AwaitSpec
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.v1 import common_pb2

STRONG = common_pb2.CONSISTENCY_STRONG
_T = TypeVar("_T")

# In the message of a homed write refused because its home could not be reached at all.
NOT_APPLIED = "the write was not applied anywhere"
_HOW_TO_HOME = (
    "give its placement rule a home (placement[].home: <node id> in the cluster file) "
    "so that one node orders its writes"
)


class Homes:
    """The home-mode rules of one node's request layer. Runs on the node's loop.

    Stateless apart from the placement rules (immutable) and the forwarder;
    ``active`` is False when no rule has a home, and then only conditions are
    looked at (and refused).
    """

    def __init__(self, router: Router, forwarder: Forwarder) -> None:
        self._router = router
        self._placement = router.placement
        self._forwarder = forwarder
        self.node_id = router.spec.id
        self.active = self._placement.has_homes

    # -- writes ------------------------------------------------------------------

    def write_home(self, ops: Sequence[PutOp | DeleteOp]) -> str:
        """The node that must apply ``ops``: their keys' home, or "" when none has one.

        Raises InvalidArgument for a batch mixing keys of different homes, or
        homed and unhomed keys (no one node may apply it atomically in the
        homes' order), and FailedPrecondition for a condition on a key without
        a home.
        """
        if not self.active:
            _refuse_unhomed_conditions(ops, self._placement.placement_of)
            return ""
        home_of = self._placement.home_of
        homes = {home_of(op.key): op.key for op in ops}
        if len(homes) > 1:
            shown = ", ".join(
                f"{key[:64]!r} ({f'home {home}' if home else 'no home'})"
                for home, key in sorted(homes.items())
            )
            raise InvalidArgument(
                f"batch mixes keys of different homes: {shown}; writes to a homed prefix "
                "are applied only at its home, so split the batch into one Write per home "
                "(and one for keys without a home)"
            )
        home = next(iter(homes), "")
        if not home:
            _refuse_unhomed_conditions(ops, self._placement.placement_of)
        return home

    async def forward_write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        home: str,
        call: Call,
        await_replicas: AwaitSpec | None = None,
    ) -> WriteAck:
        """Have ``home`` apply ``ops`` (this node is not their home)."""
        key = ops[0].key
        self._refuse_if_forwarded(call, key, home)
        try:
            return await self._forwarder.write(
                ops, key, call, await_replicas=await_replicas, targets=(home,)
            )
        except Unavailable as exc:
            # Router.forward says "may have been applied" when the write was sent and
            # its answer lost; otherwise the home was never reached.
            outcome = (
                "its outcome is unknown" if "may have been applied" in str(exc) else NOT_APPLIED
            )
            raise Unavailable(
                f"{self._describe(key, home)} did not answer the write ({exc}); {outcome}: "
                "writes under a homed prefix are applied only at their home, never elsewhere"
            ) from None

    # -- STRONG reads ------------------------------------------------------------

    def read_home(self, key: bytes) -> str:
        """``key``'s home, which alone may serve it STRONG; FailedPrecondition without one."""
        home = self._placement.home_of(key) if self.active else ""
        if not home:
            raise FailedPrecondition(
                f"key {key[:64]!r} has no home, so it cannot be read STRONG: its writes are "
                f"accepted at every PoP and no node holds the latest for sure; {_HOW_TO_HOME}, "
                "or read it LOCAL or SESSION"
            )
        return home

    async def get(self, key: bytes, home: str, call: Call) -> GetResult:
        """A STRONG read of ``key`` served by its ``home`` (not this node)."""
        self._refuse_if_forwarded(call, key, home)
        return await self._from_home(key, home, self._forwarder.get(key, call, targets=(home,)))

    async def get_many(
        self,
        keys: Sequence[bytes],
        call: Call,
        read_local: Callable[[Sequence[bytes]], list[Found]],
    ) -> BatchGetResult | None:
        """A STRONG BatchGet: each key read at its home (``read_local`` for this node's).

        Returns None when this node is the home of every key (the caller reads
        them itself). Raises FailedPrecondition naming the first key without a home.
        """
        by_home: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_home.setdefault(self.read_home(key), []).append(i)
        if by_home.keys() == {self.node_id}:
            return None
        found: list[Found] = [None] * len(keys)
        read_by = [self.node_id] * len(keys)
        mine = by_home.pop(self.node_id, [])
        for i, item in zip(mine, read_local([keys[i] for i in mine]), strict=True):
            found[i] = item
        for home, at in by_home.items():
            self._refuse_if_forwarded(call, keys[at[0]], home)
        replies = await asyncio.gather(
            *(
                self._from_home(
                    keys[at[0]],
                    home,
                    self._forwarder.get_many([keys[i] for i in at], call, targets=(home,)),
                )
                for home, at in by_home.items()
            )
        )
        for at, reply in zip(by_home.values(), replies, strict=True):
            readers = reply.read_by or [reply.served_by] * len(at)
            for i, item, reader in zip(at, reply.found, readers, strict=True):
                found[i] = item
                read_by[i] = reader
        return BatchGetResult(found, self.node_id, read_by)

    def scan_home(self, lo: bytes, hi: bytes) -> str:
        """The one home of every key in [lo, hi) (hi b"": unbounded), or FailedPrecondition."""
        cuts = {lo}
        for rule in self._placement.rules:
            cuts.update(e for e in prefix_range(rule.prefix) if e > lo and (not hi or e < hi))
        home_of = self._placement.home_of if self.active else (lambda key: "")
        homes = {home_of(point) for point in cuts}
        if len(homes) != 1 or "" in homes:
            raise FailedPrecondition(
                f"a STRONG scan must lie under one home, and [{lo[:64]!r}, {hi[:64]!r}) "
                f"{'spans keys without a home' if '' in homes else 'spans several homes'}; "
                f"scan one homed prefix, or {_HOW_TO_HOME}"
            )
        return homes.pop()

    async def scan(
        self, lo: bytes, hi: bytes, limit: int, keys_only: bool, home: str, call: Call
    ) -> ScanResult:
        """A STRONG scan page of [lo, hi) served by its ``home`` (not this node)."""
        self._refuse_if_forwarded(call, lo, home)
        served = self._forwarder.scan(lo, hi, limit, keys_only, lo, call, targets=(home,))
        return await self._from_home(lo, home, served)

    # -- helpers -----------------------------------------------------------------

    async def _from_home(self, key: bytes, home: str, answer: Awaitable[_T]) -> _T:
        """``answer`` from the home; Unavailable names the home (no other node may serve)."""
        try:
            return await answer
        except Unavailable as exc:
            raise Unavailable(
                f"{self._describe(key, home)} cannot serve this STRONG read ({exc}); only "
                "the home may serve it (LOCAL reads keep working at every PoP)"
            ) from None

    def _describe(self, key: bytes, home: str) -> str:
        prefix = self._placement.placement_of(key)
        return f"node {home}, the home of prefix {prefix.decode('utf-8', 'replace')!r},"

    def _refuse_if_forwarded(self, call: Call, key: bytes, home: str) -> None:
        if call.forwarded_by is not None:
            raise FailedPrecondition(
                f"node {self.node_id} is not the home of key {key[:64]!r} ({home} is) and the "
                f"call was already forwarded by {call.forwarded_by}; the nodes disagree on "
                "the placement rules"
            )


def _refuse_unhomed_conditions(
    ops: Sequence[PutOp | DeleteOp], placement_of: Callable[[bytes], bytes]
) -> None:
    for op in ops:
        if op.condition is not None:
            prefix = placement_of(op.key)
            where = f"prefix {prefix.decode('utf-8', 'replace')!r}" if prefix else "global keys"
            raise FailedPrecondition(
                f"key {op.key[:64]!r} has no home, so its write cannot carry a condition "
                f"({op.condition.describe()}): {where} accept writes at every PoP "
                "(multi-writer, last writer wins), so there is no single order of writes to "
                f"check a condition against; {_HOW_TO_HOME}"
            )
