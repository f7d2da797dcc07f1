"""replication/syncturns.py: which of two nodes syncing with each other gives way."""

from __future__ import annotations

import pytest

from edgekv.replication.syncturns import ACTIVE_S, MAX_GIVE_WAY_S, SyncTurns, SyncYielded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_greater_id_gives_way_while_the_peer_syncs_with_it() -> None:
    clock = Clock()
    turns = SyncTurns("iad-1", clock=clock)
    turns.check("fra-1")  # fra-1 has made no call: iad-1's sync runs
    turns.saw("fra-1")
    assert turns.peer_syncing("fra-1") and turns.gives_way_to("fra-1")
    with pytest.raises(SyncYielded, match="fra-1 is syncing with iad-1"):
        turns.check("fra-1")
    assert turns.yielded_total == 1


def test_smaller_id_never_gives_way() -> None:
    clock = Clock()
    turns = SyncTurns("fra-1", clock=clock)
    turns.saw("iad-1")
    assert turns.peer_syncing("iad-1")
    turns.check("iad-1")  # does not raise: one of the two syncs always runs
    assert turns.yielded_total == 0


def test_peer_counts_as_syncing_only_within_active_s() -> None:
    clock = Clock()
    turns = SyncTurns("iad-1", clock=clock)
    turns.saw("fra-1")
    clock.now += ACTIVE_S - 0.01
    assert turns.gives_way_to("fra-1")
    clock.now += 0.02  # the peer's sync ended (or stalled): this node's runs again
    assert not turns.gives_way_to("fra-1")
    turns.check("fra-1")
    assert not turns.gives_way_to("nrt-1")  # another peer's calls are its own


def test_gives_way_to_one_peer_for_at_most_max_give_way_s_in_a_row() -> None:
    clock = Clock()
    turns = SyncTurns("nrt-1", clock=clock)
    while True:  # the peer pushes every second, for ever
        turns.saw("fra-1")
        try:
            turns.check("fra-1")
        except SyncYielded:
            clock.now += 1.0
            continue
        break
    assert MAX_GIVE_WAY_S - 1 <= turns.yielded_total <= MAX_GIVE_WAY_S + 1
    turns.completed("fra-1")  # nrt-1's sync ran to its end: the count starts again
    turns.saw("fra-1")
    with pytest.raises(SyncYielded):
        turns.check("fra-1")


def test_a_peer_whose_pushes_come_and_go_cannot_reset_the_bound() -> None:
    clock = Clock()
    turns = SyncTurns("nrt-1", clock=clock)
    yielded_for = 0.0
    for _ in range(int(2 * MAX_GIVE_WAY_S / 110) + 1):  # pushes 100 s, pauses 10 s, again
        for _ in range(100):
            turns.saw("fra-1")
            try:
                turns.check("fra-1")
            except SyncYielded:
                yielded_for += 1.0
            clock.now += 1.0
        clock.now += 10.0
        turns.check("fra-1")  # in the pause the sync runs, but not to its end
    assert yielded_for <= MAX_GIVE_WAY_S + 1  # then it stops giving way
