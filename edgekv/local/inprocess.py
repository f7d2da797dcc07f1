"""A whole cluster inside the test process: real nodes on the running event loop.

Each node is an ``edgekv.server.node.Node`` with its own RocksDB, its real
replication senders, anti-entropy, membership and router, serving real gRPC
on loopback; only the process boundary is gone. Every directed link A->B (the
peer stream and forwarded client calls) can go through a ``FaultProxy`` on the
same loop, so a test cuts, heals and delays links exactly as
``edgekv.local.cluster.LocalCluster`` does for node processes, but starts a
three-node cluster in well under a second. It is the base of a later
deterministic simulation (one loop, one process).

A blocking call would stall the nodes the test waits for, so the helpers are
coroutines (``wait_until``, ``assert_converged`` on the engines). Use it as
``async with InProcessCluster(tmp_path) as cluster:`` (or the ``cluster`` and
``make_cluster`` fixtures of tests/inprocess/conftest.py); ``close`` stops every
node, proxy and client it started, whatever happened.

Only what a process entry does is left out: signal handlers, the ready file,
logging set-up and ``gc.freeze`` are process-wide and stay in ``edgekv serve``;
each Node keeps its own metrics registry, so nodes never collide in one process.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from edgekv.client.aio import AsyncClient
from edgekv.config.loader import load_config
from edgekv.config.model import ClusterConfig
from edgekv.local.faultproxy import FaultProxy
from edgekv.local.launcher import PlacementSpec, write_cluster_file
from edgekv.local.wait import Dump, describe_tasks, diff_dumps, wait_until_async
from edgekv.server.node import Node
from edgekv.storage.engine import Engine

T = TypeVar("T")

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45), ("ap-northeast", 35.68, 139.69))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap-northeast"))
# Short intervals so that heartbeats, anti-entropy, log trimming and collection
# happen within a test's seconds; a test may override any of them.
FAST_REPLICATION: dict[str, Any] = {
    "heartbeat_interval_s": 0.2,
    "antientropy_interval_s": 0.5,
    "log_trim_interval_s": 0.2,
    "gc_interval_s": 0.5,
}
DEFAULT_STOP_GRACE_S = 0.0  # tear-down: no drain, no flush to peers
CLOSE_STEP_TIMEOUT_S = 30.0  # a node, client or proxy that takes longer to stop hangs


# -- the one place that knows Node's insides ---------------------------------
# Node is wiring that is being reshaped; everything the harness needs beyond
# its constructor, start(), stop(), port, peer_port and endpoint goes through here.


def node_engine(node: Node) -> Engine:
    """The running node's storage engine (raises if the node is not started)."""
    return node.engine  # raises RuntimeError when the node is not running


def node_registry(node: Node) -> CollectorRegistry:
    """The node's own Prometheus registry (what its /metrics endpoint would serve)."""
    return node.metrics.registry


def _node_task_names(node_id: str) -> str:
    """The prefix of the names of a node's long-lived tasks (``<id>:sender-...``)."""
    return f"{node_id}:"


class InProcessCluster:
    """N nodes over M regions, started on the current event loop of this process.

    ``regions`` are (name, lat, lon), ``nodes`` (id, region), ``placement``
    (prefix, regions[, home]) as in ``write_cluster_file``; ``replication`` overrides
    ``FAST_REPLICATION``; ``extra`` adds top-level cluster-file sections. Ports
    are free loopback ports fixed in the cluster file (written to
    ``directory``/cluster.yaml, data under ``directory``/data), so a node keeps
    its address across ``stop_node``/``start``. With ``proxies`` every directed
    link goes through a FaultProxy: ``cut``, ``partition``, ``heal`` and
    ``set_delay`` act on the wire.

    Not thread-safe: use it from the loop it was started on. Methods that act on
    links are plain functions (they take effect at once); everything that waits
    is a coroutine.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        regions: Sequence[tuple[str, float, float]] = REGIONS,
        nodes: Sequence[tuple[str, str]] = NODES,
        placement: Sequence[PlacementSpec] = (),
        replication: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        proxies: bool = True,
    ) -> None:
        self.directory = Path(directory)
        sections: dict[str, Any] = dict(extra or {})
        sections["replication"] = {
            **FAST_REPLICATION,
            **sections.get("replication", {}),
            **(replication or {}),
        }
        self.config_path = write_cluster_file(
            self.directory, regions=regions, nodes=nodes, placement=placement, extra=sections
        )
        self.config: ClusterConfig = load_config(self.config_path)
        self.node_ids: list[str] = [n.id for n in self.config.nodes]
        self.nodes: dict[str, Node] = {}  # running nodes only
        self._use_proxies = proxies
        # (src, dst) -> proxy on src's path to dst's peer port / client port.
        self.links: dict[tuple[str, str], FaultProxy] = {}
        self.client_links: dict[tuple[str, str], FaultProxy] = {}
        self._clients: list[AsyncClient] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self, node_ids: Iterable[str] | None = None) -> None:
        """Start the given nodes (default: every node not running), all concurrently.

        Proxies are started on first use. A node that fails to start leaves the
        others running; ``close`` stops them.
        """
        if self._closed:
            raise RuntimeError("this cluster is closed")
        if self._use_proxies and not self.links:
            await self._start_proxies()
        wanted = [n for n in (node_ids or self.node_ids) if n not in self.nodes]
        results = await asyncio.gather(
            *(self._start_one(n) for n in wanted), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _start_one(self, node_id: str) -> None:
        node = Node(
            self.config,
            node_id,
            peer_addresses=self._addresses(self.links, node_id),
            forward_addresses=self._addresses(self.client_links, node_id),
        )
        await node.start()  # on failure Node.start closes what it opened
        self.nodes[node_id] = node

    @staticmethod
    def _addresses(links: Mapping[tuple[str, str], FaultProxy], src: str) -> dict[str, str]:
        return {dst: f"127.0.0.1:{p.port}" for (s, dst), p in links.items() if s == src}

    async def _start_proxies(self) -> None:
        own_ports = frozenset(self._node_ports())
        for src in self.config.nodes:
            for dst in self.config.nodes:
                if src.id == dst.id:
                    continue
                if dst.peer_listen:
                    self.links[(src.id, dst.id)] = await self._proxy(
                        dst.peer_listen, f"{src.id}->{dst.id}", own_ports
                    )
                self.client_links[(src.id, dst.id)] = await self._proxy(
                    dst.listen, f"{src.id}=>{dst.id}", own_ports
                )

    @staticmethod
    async def _proxy(target: str, name: str, avoid: frozenset[int]) -> FaultProxy:
        host, port = target.rsplit(":", 1)
        proxy = FaultProxy(host.strip("[]"), int(port), name)
        await proxy.start(avoid=avoid)
        return proxy

    async def stop_node(self, node_id: str, *, grace_s: float = 1.0) -> None:
        """Stop one node the way SIGTERM does (drain, flush to peers, close RocksDB).

        ``grace_s=0`` is the abrupt variant: no drain and no flush, close at once.
        Its data directory stays; ``start([node_id])`` brings it back.
        """
        node = self.nodes.pop(node_id)
        await node.stop(grace_s=grace_s)

    async def restart(self, node_id: str, *, grace_s: float = 1.0) -> None:
        await self.stop_node(node_id, grace_s=grace_s)
        await self.start([node_id])

    async def close(self) -> None:
        """Stop every client, node and proxy; idempotent, and safe after a failure.

        Each step is bounded by ``CLOSE_STEP_TIMEOUT_S``: a stop that hangs fails
        with the loop's pending tasks and where they wait, instead of hanging the
        test run. Raises (after closing everything else) if a step failed or a
        node left a task running, a leak that would outlive the cluster.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for client in self._clients:
            await self._close_step("closing an SDK client", client.close(), errors)
        self._clients.clear()
        for node_id in list(self.nodes):
            await self._close_step(
                f"stopping node {node_id}",
                self.stop_node(node_id, grace_s=DEFAULT_STOP_GRACE_S),
                errors,
            )  # fmt: skip
        for proxy in (*self.links.values(), *self.client_links.values()):
            await self._close_step(f"stopping proxy {proxy.name}", proxy.stop(), errors)
        leaked = self.running_tasks()
        if leaked:
            names = ", ".join(sorted(t.get_name() for t in leaked))
            for task in leaked:
                task.cancel()
            await asyncio.wait(leaked, timeout=CLOSE_STEP_TIMEOUT_S)
            errors.append(AssertionError(f"tasks still running after the cluster closed: {names}"))
        if errors:
            raise errors[0]

    @staticmethod
    async def _close_step(
        what: str, step: Coroutine[Any, Any, object], errors: list[BaseException]
    ) -> None:
        task = asyncio.ensure_future(step)
        try:
            done, _ = await asyncio.wait([task], timeout=CLOSE_STEP_TIMEOUT_S)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:  # describe the tasks, this one too, before cancelling it
            errors.append(
                AssertionError(
                    f"{what} did not finish within {CLOSE_STEP_TIMEOUT_S}s; "
                    f"pending tasks: {describe_tasks()}"
                )
            )
            task.cancel()
            await asyncio.wait([task], timeout=CLOSE_STEP_TIMEOUT_S)  # it may ignore that too
        elif not task.cancelled() and (error := task.exception()) is not None:
            errors.append(error)  # close the rest anyway, report the first failure

    def running_tasks(self) -> list[asyncio.Task[Any]]:
        """The long-lived tasks of this cluster's nodes on the loop (none once closed)."""
        prefixes = tuple(_node_task_names(n) for n in self.node_ids)
        return [
            t for t in asyncio.all_tasks() if t.get_name().startswith(prefixes) and not t.done()
        ]

    def ports(self) -> list[int]:
        """Every TCP port this cluster listens on (nodes' client and peer ports, proxies)."""
        proxies = (*self.links.values(), *self.client_links.values())
        return self._node_ports() + [p.port for p in proxies]

    def _node_ports(self) -> list[int]:
        nodes = self.config.nodes
        return [int(a.rsplit(":", 1)[1]) for n in nodes for a in (n.listen, n.peer_listen) if a]

    async def __aenter__(self) -> InProcessCluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- access ----------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        """The running Node ``node_id`` (KeyError if it is stopped)."""
        return self.nodes[node_id]

    def engine(self, node_id: str) -> Engine:
        """The running node's engine, for assertions on what it stores."""
        return node_engine(self.nodes[node_id])

    def endpoint(self, node_id: str) -> str:
        """The node's client address ("127.0.0.1:port"), fixed for the cluster's life."""
        return self.config.node(node_id).listen

    def client(self, node_id: str, **kwargs: Any) -> AsyncClient:
        """An SDK client bound to ``node_id`` (no discovery: every call goes to that node).

        Pass ``discover=True`` to test the SDK's own routing. Closed by ``close``.
        """
        kwargs.setdefault("discover", False)
        kwargs.setdefault("timeout_s", 10.0)
        client = AsyncClient(self.endpoint(node_id), **kwargs)
        self._clients.append(client)
        return client

    def region_of(self, node_id: str) -> str:
        return self.config.node(node_id).region

    def metric(self, node_id: str, sample: str, **labels: str) -> float:
        """The sum of a node's Prometheus samples named ``sample`` whose labels match.

        ``metric("fra-1", "edgekv_antientropy_syncs_total", peer="nrt-1")``; 0 if none.
        """
        total = 0.0
        for family in node_registry(self.nodes[node_id]).collect():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    # -- links -----------------------------------------------------------------

    def _require_proxies(self) -> None:
        if not self._use_proxies:
            raise RuntimeError("this cluster was started without fault proxies")

    def _link_proxies(self, a: str, b: str) -> list[FaultProxy]:
        self._require_proxies()
        pairs = ((a, b), (b, a))
        return [m[p] for m in (self.links, self.client_links) for p in pairs if p in m]

    def cut(self, a: str, b: str) -> None:
        """Cut every connection between a and b (peer and forwarded traffic), both ways."""
        for proxy in self._link_proxies(a, b):
            proxy.cut()

    def restore(self, a: str, b: str) -> None:
        for proxy in self._link_proxies(a, b):
            proxy.restore()

    def partition(self, *groups: Sequence[str]) -> None:
        """Cut every link between nodes of different groups (a node in none is cut off)."""
        side = {node: i for i, group in enumerate(groups) for node in group}
        for a in self.node_ids:
            for b in self.node_ids:
                if a < b and side.get(a, -1) != side.get(b, -2):
                    self.cut(a, b)

    def heal(self) -> None:
        """Restore every link."""
        self._require_proxies()
        for proxy in (*self.links.values(), *self.client_links.values()):
            proxy.restore()

    def set_delay(self, a: str, b: str, one_way_ms: float) -> None:
        """One-way delay on every connection between a and b, both directions."""
        for proxy in self._link_proxies(a, b):
            proxy.set_delay(one_way_ms)

    # -- waiting and checking --------------------------------------------------

    async def wait_until(
        self,
        predicate: Callable[[], T | Awaitable[T]],
        *,
        timeout_s: float = 10.0,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` (plain or async) without blocking the nodes; its truthy result."""
        return await wait_until_async(predicate, timeout_s=timeout_s, what=what)

    def dump(self, node_id: str, prefix: bytes = b"") -> Dump:
        """Every live key under ``prefix`` in the node's own engine: key -> (value, ts, origin).

        Read locally, so a key the node may not hold is simply absent (no forwarding).
        """
        engine = self.engine(node_id)
        out: Dump = {}
        start = b""
        while True:
            page = engine.scan_prefix(prefix, limit=1000, start=start)
            for item in page.items:
                out[item.key] = (item.value, item.timestamp, item.origin)
            if page.next_start is None:
                return out
            start = page.next_start

    def differences(self, prefix: bytes = b"", node_ids: Iterable[str] | None = None) -> str:
        """How the nodes' live data under ``prefix`` differs ("" when identical)."""
        return diff_dumps({n: self.dump(n, prefix) for n in (node_ids or self.nodes)})

    async def assert_converged(
        self,
        prefix: bytes = b"",
        node_ids: Iterable[str] | None = None,
        *,
        timeout_s: float = 20.0,
    ) -> Dump:
        """Poll until the given nodes (default: all running) hold identical data; return it.

        Raises AssertionError with the differences at the deadline, like
        ``edgekv.local.wait.assert_converged`` does for node processes.
        """
        names = list(node_ids or self.nodes)
        try:
            await self.wait_until(
                lambda: not self.differences(prefix, names),
                timeout_s=timeout_s,
                what=f"convergence of {', '.join(names)} under {prefix!r}",
            )
        except TimeoutError:
            detail = self.differences(prefix, names)
            raise AssertionError(f"nodes did not converge within {timeout_s}s: {detail}") from None
        return self.dump(names[0], prefix)

    def traces(self, node_id: str, needle: bytes) -> list[str]:
        """Where ``needle`` appears in any key or value of the node's column families.

        For residency checks: data (tombstones and expired records included), the
        replication log and the digest index. Empty when the node holds no trace.
        """
        found = []
        names = ("data", "log", "digest")
        for name, cf in zip(names, node_engine(self.nodes[node_id]).column_families(), strict=True):
            for key, value in cf.items():  # raw mode: both are bytes
                k, v = bytes(key), bytes(value)  # type: ignore[arg-type]
                if needle in k or needle in v:
                    found.append(f"{node_id} {name}: {k[:64]!r}")
        return found


# What the ``make_cluster`` test fixture hands out: ``await make_cluster(**kwargs)``.
ClusterFactory = Callable[..., Awaitable[InProcessCluster]]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``port`` now (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
