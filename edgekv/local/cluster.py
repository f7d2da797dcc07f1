"""A whole multi-region cluster on loopback: node processes plus fault proxies.

Every directed peer link A->B goes through its own FaultProxy, so tests and
demos can cut, delay and restore links on the wire while every node keeps
serving clients. Nodes are real `edgekv serve` processes (launcher.py).
WAN emulation sets each link's one-way delay from the cluster file's
``wan.delays_ms`` matrix or from the great-circle distance between regions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgekv.cluster.geo import one_way_delay_ms
from edgekv.config.loader import load_config
from edgekv.config.model import ClusterConfig
from edgekv.errors import EdgeKVError
from edgekv.local.faultproxy import FaultProxy, ProxyHost
from edgekv.local.launcher import (
    DEFAULT_START_TIMEOUT_S,
    NodeProcess,
    start_node,
    sweep_ready_files,
)


class LocalCluster:
    """Start, stop, kill and partition the nodes of one cluster file.

    Use as a context manager (or call ``close``): every process and proxy it
    started is stopped, whatever happened.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        run_dir: str | os.PathLike[str] | None = None,
        proxies: bool = True,
        wan: bool = False,
        env: dict[str, str] | None = None,
        log_level: str = "info",
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.config: ClusterConfig = load_config(self.config_path)
        self.run_dir = Path(run_dir) if run_dir else self.config_path.parent / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        sweep_ready_files(self.run_dir)  # a killed node's ready file names a dead PID
        self.nodes: dict[str, NodeProcess] = {}
        self._env = env
        self._log_level = log_level
        self._host: ProxyHost | None = ProxyHost() if proxies else None
        # (src, dst) -> proxy on src's path to dst's peer port / client port.
        self.links: dict[tuple[str, str], FaultProxy] = {}
        self.client_links: dict[tuple[str, str], FaultProxy] = {}
        if self._host is not None:
            own_ports = frozenset(
                int(addr.rsplit(":", 1)[1])
                for n in self.config.nodes
                for addr in (n.listen, n.peer_listen, n.http_listen)
                if addr
            )
            for src in self.config.nodes:
                for dst in self.config.nodes:
                    if src.id == dst.id:
                        continue
                    if dst.peer_listen:
                        self.links[(src.id, dst.id)] = self._host.add(
                            dst.peer_listen, name=f"{src.id}->{dst.id}", avoid=own_ports
                        )
                    self.client_links[(src.id, dst.id)] = self._host.add(
                        dst.listen, name=f"{src.id}=>{dst.id}", avoid=own_ports
                    )
            if wan:
                self.apply_wan_delays()

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.config.nodes]

    def endpoint(self, node_id: str) -> str:
        return self.nodes[node_id].endpoint

    # -- data ------------------------------------------------------------------

    def data_dirs(self) -> dict[str, Path]:
        """Where each node keeps its RocksDB (the cluster file's ``data_dir``, resolved)."""
        return {n.id: Path(n.data_dir) for n in self.config.nodes}

    def remove_data(self) -> list[Path]:
        """Delete the data directories of this cluster file's nodes, and nothing else.

        Returns the directories removed (those that existed). Refuses, removing
        nothing, while a node of this cluster still runs (a ready file with a live
        PID) or when a data directory would contain the cluster file or the run
        directory.
        """
        running = {
            n: pid for n, pid in sweep_ready_files(self.run_dir).items() if n in self.data_dirs()
        }
        running.update({n: p.pid for n, p in self.nodes.items() if p.alive()})
        if running:
            listed = ", ".join(f"{n} (pid {pid})" for n, pid in sorted(running.items()))
            raise EdgeKVError(f"not removing data: still running: {listed}; stop it first")
        keep = (self.config_path, self.run_dir.resolve())
        for node_id, path in self.data_dirs().items():
            path = path.resolve()
            if any(path == k or path in k.parents for k in keep):
                raise EdgeKVError(
                    f"not removing data: {node_id}'s data_dir {path} holds the cluster file "
                    f"or the run directory"
                )
        removed = []
        for path in self.data_dirs().values():
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path)
        return removed

    # -- processes -------------------------------------------------------------

    def start(
        self,
        node_ids: Iterable[str] | None = None,
        *,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start the given nodes (default: all that are not running), side by side.

        Each node starts in its own thread and is waited for on its own, so the
        nodes are serving when this returns and a cluster is up in about one
        node's start-up time (mostly Python imports), not the sum. If a node
        fails to start, the others that did are kept (``close`` stops them) and
        the first failure is raised. ``env`` adds to the cluster's environment
        for these starts only (e.g. a test clock offset for one node).
        """
        wanted = []
        for node_id in node_ids or self.node_ids:
            proc = self.nodes.get(node_id)
            if proc is None or not proc.alive():
                wanted.append(node_id)
        if len(wanted) <= 1:
            for node_id in wanted:
                self.nodes[node_id] = self._start_one(node_id, timeout_s, env)
            return
        with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="start") as pool:
            starts = [(n, pool.submit(self._start_one, n, timeout_s, env)) for n in wanted]
        failures: list[BaseException] = []
        for node_id, future in starts:
            error = future.exception()
            if error is None:
                self.nodes[node_id] = future.result()
            else:
                failures.append(error)
        if failures:
            raise failures[0]

    def _start_one(
        self, node_id: str, timeout_s: float, env: dict[str, str] | None = None
    ) -> NodeProcess:
        args: list[str] = []
        for (src, dst), proxy in self.links.items():
            if src == node_id:
                args += ["--peer-address", f"{dst}=127.0.0.1:{proxy.port}"]
        for (src, dst), proxy in self.client_links.items():
            if src == node_id:
                args += ["--forward-address", f"{dst}=127.0.0.1:{proxy.port}"]
        return start_node(
            self.config_path,
            node_id,
            timeout_s=timeout_s,
            log_dir=self.run_dir,
            env={**(self._env or {}), **(env or {})},
            log_level=self._log_level,
            extra_args=args,
        )

    def stop(self, node_id: str) -> int:
        """Graceful stop (SIGTERM, drain); returns the exit code."""
        return self.nodes[node_id].stop()

    def kill(self, node_id: str) -> None:
        """SIGKILL: a crash."""
        self.nodes[node_id].kill()

    def restart(self, node_id: str) -> None:
        self.nodes[node_id].stop()
        self.start([node_id])

    # -- links -----------------------------------------------------------------

    def _require_host(self) -> ProxyHost:
        if self._host is None:
            raise RuntimeError("this cluster was started without fault proxies")
        return self._host

    def _link_proxies(self, a: str, b: str) -> list[FaultProxy]:
        pairs = ((a, b), (b, a))
        return [m[p] for m in (self.links, self.client_links) for p in pairs if p in m]

    def cut(self, a: str, b: str) -> None:
        """Cut every connection between a and b (peer and forwarded traffic), both ways."""
        host = self._require_host()
        for proxy in self._link_proxies(a, b):
            host.cut(proxy)

    def restore(self, a: str, b: str) -> None:
        host = self._require_host()
        for proxy in self._link_proxies(a, b):
            host.restore(proxy)

    def partition(self, *groups: Sequence[str]) -> None:
        """Cut every link between nodes of different groups."""
        side = {node: i for i, group in enumerate(groups) for node in group}
        for a, b in self.links:
            if a < b and side.get(a, -1) != side.get(b, -2):
                self.cut(a, b)

    def heal(self) -> None:
        """Restore every link."""
        host = self._require_host()
        for proxy in (*self.links.values(), *self.client_links.values()):
            host.restore(proxy)

    def set_delay(self, a: str, b: str, one_way_ms: float) -> None:
        """One-way delay on every connection between a and b, both directions."""
        host = self._require_host()
        for proxy in self._link_proxies(a, b):
            host.set_delay(proxy, one_way_ms)

    def wan_delay_ms(self, region_a: str, region_b: str) -> float:
        """The emulated one-way delay between two regions (cluster file, else distance)."""
        if region_a == region_b:
            return 0.0
        configured = self.config.wan.delays_ms.get((region_a, region_b))
        if configured is not None:
            return configured
        return one_way_delay_ms(
            self.config.region(region_a).location, self.config.region(region_b).location
        )

    def apply_wan_delays(self) -> None:
        """Put the emulated inter-region delay on every link."""
        for a in self.config.nodes:
            for b in self.config.nodes:
                if a.id < b.id:
                    self.set_delay(a.id, b.id, self.wan_delay_ms(a.region, b.region))

    # -- lifecycle -------------------------------------------------------------

    def stop_all(self) -> dict[str, int]:
        """Graceful stop of every node, side by side; each node's exit code.

        A node draining alone waits up to a second for its peers' replication
        streams to it; stopped together, they all end at once.
        """
        with ThreadPoolExecutor(
            max_workers=max(1, len(self.nodes)), thread_name_prefix="stop"
        ) as pool:
            codes = {n: pool.submit(proc.stop) for n, proc in self.nodes.items()}
        return {n: future.result() for n, future in codes.items()}

    def close(self) -> None:
        """Stop every node (``stop_all``), then the proxies."""
        self.stop_all()
        if self._host is not None:
            self._host.close()
            self._host = None

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
