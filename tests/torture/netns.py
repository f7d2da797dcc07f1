"""Real network partitions: each node in its own network namespace, links cut by nftables.

``Network`` builds, for one run, a Linux bridge in the test's own (root)
namespace and one namespace per node, joined to the bridge by a veth pair, with
an address per node from 198.18.0.0/15 (RFC 2544's range for network tests: no
real host uses it). The bridge holds the subnet's first address, so the test
process and its clients reach every node directly; nodes reach each other over
the bridge. ``NetnsCluster`` is a LocalCluster whose nodes listen on their
namespace's address (``ip netns exec`` runs them: the pid stays the node's) and
whose partitions are nftables rules inside the namespaces: every packet to and
from an address of the other side is dropped, both directions, so open
connections stall and new ones time out, as on a real network (the fault proxy
closes connections instead). Healing empties those rules.

Every name carries a per-run id (parallel test workers never collide); ``close``
removes the namespaces (with their nftables tables and veth ends), the bridge
and the root-side veths, also after a failure, and an ``atexit`` hook backs it;
a namespace's name carries its creator's pid, so what a killed run left behind
is swept by the next one (``sweep_stale``).
Needs root, ``ip`` (iproute2) and ``nft`` (nftables: scripts/torture_deps.sh
installs them); ``unavailable()`` says why not, and callers fall back to the
fault proxies.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import DEFAULT_START_TIMEOUT_S, NodeProcess, pid_alive, start_node

_TABLE = "edgekv_torture"
_SETUP = f"""
table inet {_TABLE} {{
    set cut {{ type ipv4_addr; }}
    chain input {{ type filter hook input priority 0; policy accept; ip saddr @cut drop; }}
    chain output {{ type filter hook output priority 0; policy accept; ip daddr @cut drop; }}
}}
"""
_live: set[Network] = set()


class NetnsUnavailable(RuntimeError):
    """Network namespaces or nftables cannot be used here; the message says why."""


def _run(*cmd: str, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def unavailable() -> str:
    """Why real partitions cannot be used here ("" when they can): tried once."""
    global _why_not
    if _why_not is None:
        _why_not = _probe()
    return _why_not


_why_not: str | None = None


def _probe() -> str:
    if os.geteuid() != 0:
        return "network namespaces and nftables need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian package {package}: scripts/torture_deps.sh)"
    try:
        with Network(["probe"]) as net:
            net.cut([("probe", "probe")])
            net.heal()
    except NetnsUnavailable as exc:
        return str(exc)
    return ""


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no interface here is on (parallel runs pick others)."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, check=False
    ).stdout
    pool = list(ipaddress.IPv4Network("198.18.0.0/15").subnets(new_prefix=24))
    start = (os.getpid() * 7 + random.randrange(len(pool))) % len(pool)
    for i in range(len(pool)):
        subnet = pool[(start + i) % len(pool)]
        if str(subnet) not in routes:
            return subnet
    raise NetnsUnavailable("no free /24 left in 198.18.0.0/15")


class Network:
    """One run's namespaces, veths, bridge and nftables sets. Use as a context
    manager or call ``close``; every method runs ``ip``/``nft`` (blocking)."""

    def __init__(self, node_ids: Sequence[str]) -> None:
        self.run_id = f"{os.getpid() % 100000:05d}{random.randrange(16**2):02x}"[-6:]
        self.bridge = f"ekb{self.run_id}"
        subnet = _free_subnet()
        hosts = subnet.hosts()
        self.gateway = str(next(hosts))  # the bridge: the test's side
        self.prefix = subnet.prefixlen
        self.address = {node: str(next(hosts)) for node in node_ids}
        self.namespace = {
            node: f"edgekv-{os.getpid()}-{self.run_id}-{i}" for i, node in enumerate(node_ids)
        }
        self._veths: list[str] = []
        self._cut: set[frozenset[str]] = set()
        _live.add(self)
        try:
            sweep_stale()
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{self.prefix}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, (node, ns) in enumerate(self.namespace.items()):
            outer, inner = f"ek{self.run_id}n{i}", f"ek{self.run_id}p{i}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self._veths.append(outer)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", outer, "master", self.bridge)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", inner, "name", "eth0")
            cidr = f"{self.address[node]}/{self.prefix}"
            _run("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=_SETUP)

    def exec_prefix(self, node: str) -> list[str]:
        """The command prefix that runs a process in ``node``'s namespace."""
        return ["ip", "netns", "exec", self.namespace[node]]

    def cut(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Drop every packet between each (a, b), both ways (rules in both namespaces)."""
        adds: dict[str, set[str]] = {}
        for a, b in pairs:
            self._cut.add(frozenset((a, b)))
            adds.setdefault(a, set()).add(self.address[b])
            adds.setdefault(b, set()).add(self.address[a])
        for node, addresses in adds.items():
            elements = ", ".join(sorted(addresses))
            self._nft(node, "add", "element", "inet", _TABLE, "cut", f"{{ {elements} }}")

    def heal(self) -> None:
        """Drop no packet any more."""
        for node in self.namespace:
            self._nft(node, "flush", "set", "inet", _TABLE, "cut")
        self._cut.clear()

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._cut

    def rules(self, node: str) -> str:
        """``node``'s nftables ruleset (for tests and failure reports)."""
        done = subprocess.run(
            [*self.exec_prefix(node), "nft", "list", "table", "inet", _TABLE],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout

    def _nft(self, node: str, *args: str) -> None:
        _run(*self.exec_prefix(node), "nft", *args)

    def close(self) -> None:
        """Remove the namespaces (their nftables tables and veth ends go with them), the
        bridge and the veths. Idempotent; never raises."""
        for ns in self.namespace.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for veth in self._veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self._veths.clear()
        _live.discard(self)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run still present (none after ``close``)."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        found = [ns for ns in self.namespace.values() if ns in names]
        return found + [f"link {self.bridge}"] * (self.bridge in links)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NAMESPACE = re.compile(r"^edgekv-(\d+)-(\w+)-\d+\b")


def sweep_stale() -> list[str]:
    """Remove the namespaces and bridges of runs whose process is gone (killed before
    ``close``); the namespaces removed."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for line in names.splitlines():
        found = _NAMESPACE.match(line)
        if found is None or pid_alive(int(found[1])):
            continue
        ns = line.split()[0]
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"ekb{found[2]}"], capture_output=True, check=False)
        removed.append(ns)
    return removed


@atexit.register
def _close_all() -> None:
    for net in list(_live):
        net.close()


def place_nodes(cluster_file: Path, network: Network) -> None:
    """Rewrite ``cluster_file`` so each node listens on its namespace's address (same ports)."""
    doc: dict[str, Any] = yaml.safe_load(cluster_file.read_text(encoding="utf-8"))
    for entry in doc["nodes"]:
        host = network.address[entry["id"]]
        for field in ("listen", "peer_listen", "metrics_listen", "http_listen"):
            if entry.get(field):
                entry[field] = f"{host}:{entry[field].rsplit(':', 1)[1]}"
    cluster_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


class NetnsCluster(LocalCluster):
    """A LocalCluster with every node in its own namespace, partitioned by nftables.

    Builds its Network (and rewrites the cluster file's addresses) before the
    nodes start; ``close`` stops the nodes, then removes the network.
    """

    def __init__(self, config_path: str | os.PathLike[str], **kwargs: Any) -> None:
        path = Path(config_path)
        ids = [n["id"] for n in yaml.safe_load(path.read_text(encoding="utf-8"))["nodes"]]
        self.network = Network(ids)
        try:
            place_nodes(path, self.network)
            super().__init__(path, proxies=False, **kwargs)
        except BaseException:
            self.network.close()
            raise

    def _start_one(
        self, node_id: str, timeout_s: float, env: dict[str, str] | None = None
    ) -> NodeProcess:
        return start_node(
            self.config_path,
            node_id,
            timeout_s=timeout_s or DEFAULT_START_TIMEOUT_S,
            log_dir=self.run_dir,
            env={**(self._env or {}), **(env or {})},
            log_level=self._log_level,
            command_prefix=self.network.exec_prefix(node_id),
        )

    def cut(self, a: str, b: str) -> None:
        self.network.cut([(a, b)])

    def restore(self, a: str, b: str) -> None:
        """Restore one link: the others stay cut."""
        others = [tuple(p) for p in self.network._cut if p != frozenset((a, b))]
        self.network.heal()
        self.network.cut([(x, y) for x, y in others])

    def partition(self, *groups: Sequence[str]) -> None:
        side = {node: i for i, group in enumerate(groups) for node in group}
        ids = self.node_ids
        self.network.cut(
            (a, b) for a in ids for b in ids if a < b and side.get(a, -1) != side.get(b, -2)
        )

    def heal(self) -> None:
        self.network.heal()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.network.close()

    def __enter__(self) -> NetnsCluster:
        return self
