"""Ports for local clusters come from below the kernel's ephemeral range.

Outgoing connections take their local port from the ephemeral range; a port
picked there for a node could be taken by a connection before the node binds it.
"""

from __future__ import annotations

import socket

from edgekv.local import launcher


def test_ports_are_below_the_ephemeral_range_and_distinct() -> None:
    low = launcher._ephemeral_low()
    ports = launcher.free_ports(40)
    assert len(set(ports)) == 40
    assert all(launcher._LOWEST_PICKED_PORT <= port < low for port in ports), (ports, low)


def test_a_port_is_never_handed_out_twice_by_one_process() -> None:
    first = set(launcher.free_ports(200))
    second = set(launcher.free_ports(200))
    assert not first & second


def test_a_port_someone_listens_on_is_skipped(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", launcher.free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        launcher._handed_out.discard(port)
        monkeypatch.setattr(launcher, "_share", (0, 1))
        monkeypatch.setattr(launcher, "_LOWEST_PICKED_PORT", port)
        monkeypatch.setattr(launcher, "_ephemeral_low", lambda: port + 2)
        assert launcher.free_ports(1) == [port + 1]


def test_with_no_room_below_the_range_the_kernel_picks(monkeypatch) -> None:
    monkeypatch.setattr(launcher, "_ephemeral_low", lambda: launcher._LOWEST_PICKED_PORT)
    (port,) = launcher.free_ports(1)
    assert port > 0


def test_processes_with_their_own_share_never_pick_one_port(monkeypatch) -> None:
    picked = []
    for index in range(3):
        monkeypatch.setattr(launcher, "_share", (0, 1))
        launcher.share_ports(index, 3)
        picked.append(set(launcher.free_ports(100)))
        assert all(port % 3 == (launcher._LOWEST_PICKED_PORT + index) % 3 for port in picked[-1])
    assert not (picked[0] & picked[1]) and not (picked[1] & picked[2])
