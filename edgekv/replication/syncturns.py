"""Whose turn it is when two nodes run anti-entropy with each other at the same time.

One sync repairs both sides: it pulls what the peer holds newer and pushes what
this node holds newer. When two nodes start a sync with each other at once (a
node comes back: its peers' senders find it past their logs and push, while
its own applied frontier asks it to pull), both walk the same differing
buckets, and every differing record crossed the link twice and was decoded and
offered twice, half of it for nothing. Measured (bench/e2e/repair.py, 20,000
values of 24 KiB): 897 MB of anti-entropy traffic through each node for 492 MB
of data, so the repair moved half its useful bytes per second of pace, with
two apply threads contending for the repaired node's GIL.

So the node with the greater id gives way: before each fetch or push of its
sync, it checks whether the peer has pushed records to it within ``ACTIVE_S``
(the peer's sync is repairing it), and if so stops that sync (``SyncYielded``)
and tries again ``ACTIVE_S`` later, when the peer's sync has repaired both
sides and its own finds little or nothing left. The node with the smaller id
never gives way, so one of the two syncs always runs and completes; if the
peer's sync stops, its pushes stop, and this node's next try runs.

Only pushes count. Digest comparisons and listings neither count nor give way,
so a sync that finds nothing to move always completes: the syncs tombstone
collection waits for (``synced_from_ms``) keep completing between peers that
sync every second. Nor do fetches: a peer that has collected a tombstone this
node still holds fetches it on every sync (and drops it), and this node must
complete a sync to collect it too (tests/integration/test_collection.py). A
push that repeats is ended by the pushing node's own completed syncs (it never
gives way); and whatever happens, a node gives way to one peer for at most
``MAX_GIVE_WAY_S`` between two of its own completed syncs with it (a peer whose
pushes come and go cannot reset that count: only a completed sync does), and an
empty push does not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How long after a peer's last push it counts as syncing with this node. Its
# pushes come a paced slice apart: four a second at the lowest pace the cluster
# file allows (1 MiB/s, 256 KiB slices).
ACTIVE_S = 5.0
# The longest a node keeps giving way to one peer; then its sync runs anyway. A
# repair of 2.5 GB takes 2.5-3 minutes at the default pace, but ~21 minutes at the
# default floor (2 MiB/s), where the pace stays while the loops of the nodes are
# busy (pacecontrol.py); with 300 s here, such a repair outlasted it, and the
# repaired node's own sync moved the same records again (3.9 GB through each node
# for 2.46 GB of data, bench/e2e/repair.py).
MAX_GIVE_WAY_S = 1800.0


class SyncYielded(Exception):
    """A sync stopped early: the peer is syncing with this node, and it has the turn."""


class SyncTurns:
    """When each peer last made an anti-entropy call here, and who gives way.

    ``saw(peer)`` is called by the peer service as each push of records
    arrives; ``check(peer)`` by this node's own sync with that peer, before each
    fetch and push; ``completed(peer)`` when that sync completed. Runs on one event loop (not
    thread-safe); ``clock`` is monotonic seconds, settable for tests.
    """

    __slots__ = (
        "_clock", "_giving_way_since", "_last_call", "active_s", "node_id", "yielded_total",
    )  # fmt: skip

    def __init__(
        self,
        node_id: str,
        *,
        active_s: float = ACTIVE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.active_s = active_s
        self._clock = clock
        self._last_call: dict[str, float] = {}  # peer id -> monotonic s of its last push
        # peer id -> this node's first yield to it since its last completed sync with it
        self._giving_way_since: dict[str, float] = {}
        self.yielded_total = 0  # syncs this node stopped to give way (metrics)

    def saw(self, peer_id: str) -> None:
        """``peer_id`` pushed records to this node just now."""
        self._last_call[peer_id] = self._clock()

    def peer_syncing(self, peer_id: str) -> bool:
        """Has ``peer_id`` pushed records here within ``active_s``?"""
        last = self._last_call.get(peer_id)
        return last is not None and self._clock() - last < self.active_s

    def gives_way_to(self, peer_id: str) -> bool:
        """Should this node's sync with ``peer_id`` stop now (the peer's sync runs)?"""
        return self.node_id > peer_id and self.peer_syncing(peer_id)

    def check(self, peer_id: str) -> None:
        """Raise SyncYielded when this node's sync with ``peer_id`` should give way
        (and has not given way to it for MAX_GIVE_WAY_S since its last completed sync)."""
        if not self.gives_way_to(peer_id):
            return
        since = self._giving_way_since.setdefault(peer_id, self._clock())
        if self._clock() - since < MAX_GIVE_WAY_S:
            self.yielded_total += 1
            raise SyncYielded(f"{peer_id} is syncing with {self.node_id}; it has the turn")

    def completed(self, peer_id: str) -> None:
        """This node's sync with ``peer_id`` completed: the give-way count starts again."""
        self._giving_way_since.pop(peer_id, None)
