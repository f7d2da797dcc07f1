"""A real network partition and heal: two nodes in their own network namespaces, the
link between them dropped by nftables, then restored (netns.py). Skipped, saying
why, where namespaces or nftables cannot be used (not root, no nft, a sandbox)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgekv import Client
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until

from . import netns
from .netns import NetnsCluster, unavailable

pytestmark = pytest.mark.integration

_CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1.5)"


@pytest.fixture
def _needs_netns() -> None:
    why = unavailable()
    if why:
        pytest.skip(f"no real partitions here: {why}")


def _connects(cluster: NetnsCluster, src: str, dst: str) -> bool:
    """Can a process in ``src``'s namespace open a TCP connection to ``dst``'s peer port?"""
    host, port = str(cluster.config.node(dst).peer_listen).rsplit(":", 1)
    done = subprocess.run(
        [*cluster.network.exec_prefix(src), sys.executable, "-c", _CONNECT, host, port],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    return done.returncode == 0


@pytest.mark.usefixtures("_needs_netns")
def test_nftables_partition_drops_the_link_and_heal_converges(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=(("r1", 0.0, 0.0), ("r2", 1.0, 1.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")),
        extra={"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 0.5}},
    )
    with NetnsCluster(path, log_level="warning") as cluster:
        net = cluster.network
        cluster.start()
        assert cluster.endpoint("a-1").startswith(net.address["a-1"] + ":")
        a = Client(cluster.endpoint("a-1"), discover=False, timeout_s=5)
        b = Client(cluster.endpoint("b-1"), discover=False, timeout_s=5)
        with a, b:
            a.put("n/before", "1")
            wait_until(lambda: b.get("n/before"), timeout_s=30, what="replication before")
            assert _connects(cluster, "a-1", "b-1")

            cluster.partition(["a-1"], ["b-1"])
            assert net.address["b-1"] in net.rules("a-1")
            assert net.address["a-1"] in net.rules("b-1")
            a.put("n/during-a", "1")  # both sides keep serving their clients
            b.put("n/during-b", "1")
            written = time.monotonic()
            # Dropped: each connect times out (1.5 s), so both directions are tried at
            # once, while the writes have their chance to cross (they must not).
            with ThreadPoolExecutor(max_workers=2) as pool:
                ab, ba = pool.map(
                    lambda ends: _connects(cluster, *ends), [("a-1", "b-1"), ("b-1", "a-1")]
                )
            assert not ab and not ba, (ab, ba)
            time.sleep(max(0.0, written + 2.0 - time.monotonic()))  # 2 s since the writes
            assert b.get("n/during-a") is None and a.get("n/during-b") is None

            cluster.heal()
            assert net.address["b-1"] not in net.rules("a-1")
            assert _connects(cluster, "a-1", "b-1")
            for client, key in ((b, "n/during-a"), (a, "n/during-b")):
                wait_until(lambda c=client, k=key: c.get(k), timeout_s=60, interval_s=0.2,
                           what=f"{key} replicated after the heal")  # fmt: skip
    assert net.leftovers() == []  # namespaces (with their nft tables), veths, bridge


@pytest.mark.usefixtures("_needs_netns")
def test_netns_nodes_unreachable_on_loopback(tmp_path: Path) -> None:
    """The nodes listen in their namespaces only: nothing answers on the test's side."""
    path = write_cluster_file(tmp_path)
    with NetnsCluster(path, log_level="warning") as cluster:
        cluster.start()
        port = int(cluster.endpoint("node-1").rsplit(":", 1)[1])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), 1.0).close()


def test_without_root_the_probe_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where namespaces cannot be made, the reason is what the fallback reports."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns._probe() == "network namespaces and nftables need root"


@pytest.mark.usefixtures("_needs_netns")
def test_what_a_killed_run_left_is_swept() -> None:
    """A run killed before ``close`` (SIGKILL: no atexit) leaves namespaces and a bridge;
    the next run removes them, and never a live run's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, bridge = f"edgekv-{dead.pid}-zz{dead.pid % 10000:04d}-0", f"ekbzz{dead.pid % 10000:04d}"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    with netns.Network(["x"]) as live:
        assert stale in netns.sweep_stale() or stale not in _netns_list()
        assert live.namespace["x"] in _netns_list()  # the live run's is kept
    assert stale not in _netns_list()
    assert bridge not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
